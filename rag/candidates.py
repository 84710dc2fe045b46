"""Sentence candidates for an extractive answer: the sentence units (and bullet blocks) of the passages, a row of
the selection model's signals for each (`rag.selection.FEATURES`), and their ranking by its probability plus
the rules of strict question types."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from rag.chunking import bare_term, is_term_line
from rag.documents import Chunk, SentenceUnit
from rag.grounding import fold, numbers_in
from rag.index_layout import MAIN_INDEX, MULTILINGUAL_INDEX
from rag.lexical import neighbour_pairs, tokenize, word_count
from rag.questions import Question, content_terms
from rag.retrieval import Retrieved, sentence_vectors
from rag.selection import FEATURES
from rag.store import Store
from rag.translation import common_english_words, term_groups, translate

_NUMBER_WORD = re.compile(r"^(one|two|three|four|five|six|seven|eight|nine|ten|dozens?|hundreds?|thousands?|half|"
                          r"halves|thirds?|quarters?)$")
_NUMBER_TOKEN = re.compile(rf"^\d[\d,.]*$|{_NUMBER_WORD.pattern}")
_DATE = re.compile(r"\b(1[0-9]|20)\d{2}s?\b|\b\d{1,2}(st|nd|rd|th) century\b|\b\d{1,2}/\d{1,2}/\d{4}\b|\b(jan|feb|mar|"
                   r"apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d|(1[0-9]|20)\d{2}\s*年|"
                   r"\d{1,2}\s*月\s*\d{1,2}\s*日", re.IGNORECASE)
_FULL_DATE = re.compile(r"\b\d{1,2}/\d{1,2}/\d{4}\b|\b\d{4}-\d{2}-\d{2}\b|\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|"
                        r"nov|dec)[a-z]*\.?\s+\d{1,2}\b|\b\d{1,2}\s+(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|"
                        r"dec)[a-z]*\b|\d{1,2}\s*月\s*\d{1,2}\s*日", re.IGNORECASE)
_DAY_QUESTION = re.compile(
    r"\b(on )?what (date|day)\b|\bwhich (date|day)\b|哪一?天|几月几[日号]|什么日期", re.IGNORECASE
)
_YEAR_QUESTION = re.compile(r"\b(what|which|in what) year\b|哪一?年|\bwhat decade\b", re.IGNORECASE)
_YEAR = re.compile(r"(1[5-9]|20)\d{2}")
# The number of a part of a text ("Figure 4", "Article 12", "Rule 3.2.1", "第三章"): a place, not a quantity.
_REFERENCE = re.compile(r"\b(?:figure|fig\.|table|chart|section|article|chapter|appendix|annex|part|rule|"
                        r"paragraph|schedule|clause|item|no\.)\s*\d[\d.]*|第\s*\d+\s*[章节条款部]", re.IGNORECASE)
# A named body: an institution word, an acronym of capitals, or two capitalised words in a row.
_INSTITUTION_WORDS = ("Ministry|Department|Administration|Commission|Bureau|Council|Agency|Authority|University|"
                      "Institute|Office|Fund|Center|Centre|Committee|Board|Court")
_BODY = re.compile(rf"\b({_INSTITUTION_WORDS}|News|Regulator|Parliament|Government)\b|\b[A-Z]{{2,6}}\b|"
                   r"\b[A-Z][a-z]+ [A-Z][a-z]+\b")
# A person's name, recognised by a title or a reporting verb next to it ("Wu Yin, Professor at ...").
_PERSON = re.compile(r"\b(?:Professor|Minister|Director|Chairman|Mr\.?|Ms\.?|Dr\.?)\s+[A-Z][a-z]+ [A-Z][a-z]+|"
                     r"\b[A-Z][a-z]+ [A-Z][a-z]+,\s+(?:Professor|Director|Minister|Chairman|Head|Vice|Deputy)|"
                     r"\b[A-Z][a-z]+ [A-Z][a-z]+ (?:told|said|stated)\b")
# A name: capitalised words in a row, "of", "and" or "the" between them ("National Development and Reform
# Commission" is one name, not "National Development" and "Reform Commission"); for a body, initials too.
_NAME = re.compile(r"\b[A-Z][a-z'’]+(?:\s+(?:of\s+|and\s+|the\s+)?[A-Z][a-z'’]+)+\b")
_ENTITY = re.compile(rf"{_NAME.pattern}|\b[A-Z]{{2,}}\b")
# A person, city, province or country is not named by initials ("BRICS", "SCO", "AI" name no city; a company may
# be), nor by an institution's name ("Ministry of ...") or a term with its initials ("Chief Data Officer (CDO)").
_PLACES = ("cit", "town", "village", "count", "district", "port", "province", "region", "member state")
_PLACE_MARK = re.compile(r"\b(?:City|Cities|Town|Village|County|Counties|Province|Provinces|States?|Kingdom|"
                         r"Republic|Islands?|District|Port|Bay|Beach|Lake|Valley|Coast|Region)\b")
# A one-word place after a preposition of place ("continued on into Russia").
_LOCATED = re.compile(r"\b(?:in|into|to|from|at|near|across|throughout|of)\s+([A-Z][a-z'’]+)\b")
_MONTHS = frozenset("january february march april june july august september october november december jan feb mar "
                    "apr jun jul aug sep sept oct nov dec".split())
_WITH_INITIALS = re.compile(r"\s*\([A-Z]{2,}s?\)")
# A label before a colon ("Push for Intelligent Chips: High-end ...", "VI. Cooperation: Strategy: ..."): title
# case by style, not a name.
_LABEL_WORD = r"(?:[A-Z][\w'’()&/-]*|of|and|the|for|in|on|to|a|an|with|&|-|–)"
_LEADING_LABEL = re.compile(rf"^(?:[^\w\n]*(?:[IVXLC]+\.|\d+[.)])?\s*{_LABEL_WORD}(?: {_LABEL_WORD}){{0,7}}:\s+)+",
                            re.MULTILINE)
# A phrase in quotes ("Going Global", “Product Breakthrough”) is a coinage or a title, never a place.
_QUOTED = re.compile(r"[\"“][^\"“”\n]{1,80}[\"”]")
_INSTITUTION = re.compile(rf"\b({_INSTITUTION_WORDS}|Association|Company|Group|Bank)s?\b")
_CAPITALISED = re.compile(r"[A-Z][\w'’]+")
_ARTICLE = re.compile(r"(?:The|A|An)\s")
# The word the name of some categories carries ("Peking University", "the Data Security Law", "the National Data
# Administration"); a city or a company has no such mark, and any name the question does not hold will do.
_LAW_MARKS = r"Law|Laws|Act|Acts|Regulations?|Rules|Code|Measures|Provisions|Ordinance|Directive"
_BODY_MARKS = rf"{_INSTITUTION_WORDS}|Ministry|Ministries"
_NAME_MARKS = {"universit": r"University|Universities|College|Institute|Academy|School", "agenc": _BODY_MARKS,
               "ministr": r"Ministry|Ministries|Department|Commission|Administration|Bureau", "law": _LAW_MARKS,
               "regulation": _LAW_MARKS, "rules": _LAW_MARKS, "bank": "Bank|Banks"}
UNITS = {"percent": re.compile(r"%|percent|per cent|百分"),
          "currency": re.compile(r"yuan|rmb|¥|\$|dollar|euro|billion|million|元")}
_DEFINES = re.compile(r"^\W*(?:an? |the )?(.{2,80}?)\s+(?:is|are|means|refers to|denotes|stands for|is defined as|"
                      r"shall mean)\b", re.IGNORECASE)
ELLIPSIS = ("…", "...")


DATE_RUNNERS_UP = 2  # how far down a "when" question looks for a sentence with a day in it


@dataclass(frozen=True)
class Candidate:
    passage: Retrieved
    start: int  # offsets in the document
    end: int
    text: str
    context: str = ""  # the label line or heading it sits under ("Computing Power", "V. Security & Governance")
    is_block: bool = False  # a label line with the bullet lines under it
    units: tuple[int, ...] = ()  # the chunk's sentence units it covers (their stored vectors score it)
    support: float = 0.0
    has_number_for_noun: bool = False
    modifiers_match: bool = True


def sentence_candidates(passages: list[Retrieved], list_question: bool = False) -> list[Candidate]:
    """The sentence units of the passages (as the vector index holds them), a bullet line of several sentences as
    one (it is one item), and for lists bullet blocks."""
    seen: set[str] = set()
    found = []
    for passage in passages:
        chunk = passage.chunk
        units = list(chunk.units)
        headings = {_bare(h) for h in (chunk.title, *chunk.section.split(" > ")) if h}
        lines = _lines(chunk)
        for line in lines:
            text = chunk.text[units[line[0]].start:units[line[-1]].end]
            key = fold(text)
            if (key in seen or word_count(text) < 3 or _asks_or_leads_in(text) or _METADATA.match(text)
                    or is_term_line(text) or _bare(text) in headings):
                continue  # a question, a bare term or title, a page's tags, or a lead-in is not an answer
            seen.add(key)
            found.append(Candidate(passage, chunk.start + units[line[0]].start, chunk.start + units[line[-1]].end,
                                   text, units[line[0]].label, units=tuple(line)))
        if list_question:  # a label with its bullet lines answers "what are the X"; elsewhere its one line does
            found.extend(_blocks(passage, lines, seen))
    return found


def _asks_or_leads_in(text: str) -> bool:
    """A question the text asks itself (also as a task: "Explain the shift to ..."), or a lead-in to what follows:
    it answers nothing."""
    return text.endswith(("?", "？", ":", "：")) or bool(_TASK.match(text))


# A line of a page's tags or keywords; a task set as a question in a FAQ or an exercise.
_METADATA = re.compile(r"^\W*(?:tags?|keywords?|categories|category|filed under|topics|标签|关键词|分类)\s*[:：]",
                       re.IGNORECASE)
_TASK = re.compile(r"^\W*(?:explain|describe|outline|discuss|compare|summari[sz]e|define)\s[^.!?\n]{0,100}\.?$",
                   re.IGNORECASE)


def _is_bullet(chunk: Chunk, unit: SentenceUnit) -> bool:
    return chunk.text[:unit.start].rstrip(" ").endswith(("\n-", "\n•", "\n*"))


def _lines(chunk: Chunk) -> list[list[int]]:
    """The chunk's sentence units as candidates take them: each on its own, but a bullet line's sentences
    together."""
    lines: list[list[int]] = []
    for number, unit in enumerate(chunk.units):
        previous = chunk.units[number - 1] if number else None
        if (previous is not None and lines and _is_bullet(chunk, chunk.units[lines[-1][0]])
                and "\n" not in chunk.text[previous.end:unit.start] and unit.label == previous.label):
            lines[-1].append(number)
        else:
            lines.append([number])
    return lines


def _bare(text: str) -> str:
    """The comparison form without what opens or closes a line but says nothing (an emoji flag, a full stop)."""
    return re.sub(r"^[\W_]+|[\W_]+$", "", fold(text))


_DEFINITION_OPENING = re.compile(r"(?:An?|Any)\s")  # "A closed circuit in which ...", not "The Office said"


def with_its_term(candidate: Candidate) -> Candidate:
    """A definition quoted with the term on the line above it, as in a glossary ("Chief Data Officer (CDO)" over
    "A recommended executive role ..."): the term is often what was asked, and the definition alone does not
    say what it defines."""
    term, chunk = candidate.context, candidate.passage.chunk
    if candidate.is_block or not term or not is_term_line(term):
        return candidate
    at = candidate.start - chunk.start
    line_start = chunk.text.rfind("\n", 0, at)
    if line_start < 0 or chunk.text[line_start + 1:at].strip(" -•*"):
        return candidate  # the sentence does not open its line
    if not chunk.text[line_start + 1:at].strip() and not _DEFINITION_OPENING.match(candidate.text):
        return candidate  # neither a bullet under the term nor worded as a definition: a byline, a heading
    above_start = chunk.text.rfind("\n", 0, line_start) + 1
    above = chunk.text[above_start:line_start]
    if re.sub(r"^\s*[-•*]?\s*", "", above).strip() != term:
        return candidate
    start = above_start + len(above) - len(above.lstrip(" -•*"))
    return replace(candidate, start=chunk.start + start, text=chunk.text[start:candidate.end - chunk.start])


# A sentence that opens by pointing back ("He is also the oldest ...", "These devices ...", "该计划……") names
# its subject in the sentence before it.
_ANAPHOR = re.compile(r"^\W*(?:(?:he|she|it|they|his|her|its|their|this|these|those|such)\b|(?:他|她|它|其|该|此|这))",
                      re.IGNORECASE)


def with_its_antecedent(candidate: Candidate) -> Candidate:
    """A sentence that points back, quoted from the sentence before it in the same paragraph, so the answer says
    whom or what it is about."""
    chunk, first = candidate.passage.chunk, min(candidate.units, default=0)
    if candidate.is_block or first == 0 or not _ANAPHOR.match(candidate.text):
        return candidate
    before, own = chunk.units[first - 1], chunk.units[first]
    above = before.text(chunk.text)
    if (before.label != own.label or "\n" in chunk.text[before.end:own.start] or is_term_line(above)
            or _asks_or_leads_in(above.rstrip())):
        return candidate  # another paragraph, a heading, or a question the text asks itself
    return replace(candidate, start=chunk.start + before.start, units=(first - 1, *candidate.units),
                   text=chunk.text[before.start:candidate.end - chunk.start])


def continues(lead: Candidate, candidate: Candidate) -> bool:
    """`candidate` is the sentence right after `lead` in the same paragraph: where an answer often goes on ("...
    devised to test the primality of large numbers." then "The Miller-Rabin test ...")."""
    chunk = lead.passage.chunk
    if lead.is_block or candidate.is_block or candidate.passage.chunk.chunk_id != chunk.chunk_id or not lead.units:
        return False
    last, following = max(lead.units), min(candidate.units, default=-1)
    return following == last + 1 and "\n" not in chunk.text[chunk.units[last].end:chunk.units[following].start]


def _blocks(passage: Retrieved, lines: list[list[int]], seen: set[str]) -> list[Candidate]:
    """Runs of two or more bullet lines under one label ('Model Selection:' ...) as one list candidate."""
    chunk, units = passage.chunk, passage.chunk.units
    blocks: list[Candidate] = []
    run: list[list[int]] = []
    for line in lines + [[]]:
        is_bullet = bool(line) and _is_bullet(chunk, units[line[0]])
        if run and (not is_bullet or units[line[0]].label != units[run[0][0]].label):
            if len(run) >= 2 and units[run[0][0]].label:
                first, last = units[run[0][0]], units[run[-1][-1]]
                label_at = chunk.text.rfind(first.label, 0, first.start)
                start = label_at if label_at >= 0 else first.start
                text = chunk.text[start:last.end]
                if fold(text) not in seen:
                    seen.add(fold(text))
                    blocks.append(Candidate(passage, chunk.start + start, chunk.start + last.end, text, first.label,
                                            is_block=True, units=tuple(n for part in run for n in part)))
            run = []
        if is_bullet:
            run.append(line)
    return blocks


def candidate_features(
    asked: Question, candidates: list[Candidate], store: Store
) -> tuple[list[Candidate], np.ndarray]:
    """The candidates that can be scored (their chunk's vectors are at hand) and a row of `FEATURES` for each.

    Similarity comes from the main model when question and passage are both English, else from the multilingual
    one; a Chinese question also asks English passages in its dictionary translation (its terms, and the main
    model's similarity to it)."""
    similarity = _similarities(asked, candidates, store, asked.standalone, cross_language=True)
    english = translate(asked.standalone) if asked.cjk else ""
    translated = _similarities(asked, candidates, store, english, cross_language=False) if english else {}
    kept = [c for c in candidates if _key(c) in similarity]
    similarities = [similarity[_key(c)] for c in kept]
    if not kept:
        return [], np.zeros((0, len(FEATURES)))
    # The question's terms, each a group of the ways a sentence may say it: an English term itself; a Chinese
    # word, for English sentences, any of its dictionary senses (one word counts once, however many senses it has).
    own_terms = [((t,),) for t in dict.fromkeys(asked.terms)]
    english_terms = term_groups(asked.standalone) if english else []
    term_lists = [english_terms if english_terms and c.passage.chunk.language != "zh" else own_terms for c in kept]
    tokens = [set(tokenize(c.text)) for c in kept]
    frequency = {t: sum(1 for own in tokens if _said(t, own)) for t in set(own_terms) | set(english_terms)}
    rarity = {t: np.log(1 + len(kept) / (1 + frequency[t])) for t in frequency}
    everywhere = set().union(*tokens, *(tokenize(c.context) for c in kept))
    anywhere = [sum(1 for t in terms if _said(t, everywhere)) / len(terms) if terms else 0.0 for terms in term_lists]
    best = max(similarities)
    order = {n: rank for rank, n in enumerate(sorted(range(len(kept)), key=lambda n: -similarities[n]))}
    subject = _defined_subject(asked)
    pairs = set() if asked.cjk else word_pairs(asked.standalone)
    rows = []
    for n, candidate in enumerate(kept):
        terms = term_lists[n]
        context = set(tokenize(candidate.context + " " + candidate.passage.chunk.section))
        near = figure_for_noun(candidate.text, asked)[0] if asked.head_noun else False
        fit = type_fit(asked, candidate.text, near)
        words = word_count(candidate.text)
        share = (lambda found: sum(1 for t in terms if _said(t, found)) / len(terms)) if terms else (lambda _: 0.0)
        rare = (sum(rarity[t] for t in terms if _said(t, tokens[n])) / sum(rarity[t] for t in terms)) if terms else 0.0
        features = {
            "similarity": similarities[n], "similarity_gap": similarities[n] - best,
            "translated_similarity": translated.get(_key(candidate), 0.0),
            "similarity_rank": 1 / (1 + order[n]), "terms": share(tokens[n]), "rare_terms": rare,
            "heading_terms": share(context),
            "word_pairs": len(pairs & word_pairs(candidate.text)) / len(pairs) if pairs else 0.0,
            **{f"type_fit_{kind}": fit if asked.kind == kind or (kind == "who" and asked.wants_person) else 0.0
               for kind in ("numeric", "date", "who", "list")},
            "figure_for_noun": float(near), "definition": float(_defines(candidate, subject)),
            "passage_rank": 1 / candidate.passage.rank, "position": 1 / (1 + min(candidate.units)),
            "log_words": float(np.log1p(words)), "short": float(words < 6), "block": float(candidate.is_block),
            "truncated": float(candidate.text.rstrip().endswith(ELLIPSIS)),
            "multilingual_similarity": float(asked.cjk or candidate.passage.chunk.language == "zh"),
            "terms_anywhere": anywhere[n],
            **{f"kind_{kind}": float(asked.kind == kind) for kind in
               ("numeric", "date", "who", "list", "definition", "condition", "summary")},
        }
        rows.append(features)
    # How far below the question's best candidate on each signal: what ranks candidates within a question.
    top_score = max(c.passage.score for c in kept) or 1.0
    for name in ("rare_terms", "terms", "heading_terms", "translated_similarity"):
        top = max(features[name] for features in rows)
        for features in rows:
            features[f"{name}_gap"] = features[name] - top
    for features, candidate in zip(rows, kept):
        features["passage_score"] = candidate.passage.score / top_score
    return kept, np.asarray([[features[name] for name in FEATURES] for features in rows], dtype=float)


def word_pairs(text: str) -> set[tuple[str, str]]:
    """Neighbouring words, lower case, stop words kept: a question that copies a phrase of the sentence ("in the
    2015 season") shares its pairs; pairs of stems without stop words added nothing to selection held out."""
    return neighbour_pairs(_PAIR_WORD.findall(text.lower()))


_PAIR_WORD = re.compile(r"[^\W_]+")


def _said(term: tuple[tuple[str, ...], ...], tokens: set[str]) -> bool:
    """One of the term's ways of saying it is all in `tokens`."""
    return any(all(t in tokens for t in way) for way in term)


def rank_candidates(
    asked: Question, kept: list[Candidate], rows: np.ndarray, probabilities: np.ndarray, leader: int | None = None
) -> list[Candidate]:
    """The candidates with their probability of holding the answer, best first (`leader`, the index of one in
    `kept`, first of all when the rules of the question's type leave it in: rag.selection.second_opinion)."""
    figure = FEATURES.index("figure_for_noun")
    scored = [replace(c, support=round(float(p), 4), has_number_for_noun=bool(row[figure]))
              for c, p, row in zip(kept, probabilities, rows)]
    if asked.strict_type:  # the answer must carry a figure, a date or a name
        scored = [c for c in scored if type_fit(asked, c.text, c.has_number_for_noun) > 0]
    if asked.wants_name_of:  # "in which city": the sentence must name something the question does not
        mark = next((m for stem, m in _NAME_MARKS.items() if asked.wants_name_of.startswith(stem)), None)
        bodies = not asked.wants_name_of.startswith(_PLACES)
        scored = [c for c in scored if new_name(asked, c.text, bodies=bodies)
                  and (mark is None or re.search(rf"\b(?:{mark})\b", c.text))]
    scored.sort(key=lambda c: (-c.support, c.passage.rank, c.start))
    if leader is not None:
        scored.sort(key=lambda c: _key(c) != _key(kept[leader]))
    if not _NAMES_A_FIGURE.search(asked.text):  # a caption describes a figure; it answers what asks about one
        scored.sort(key=lambda c: bool(_CAPTION.match(c.text)))
    if asked.kind == "definition":  # "What is X?": a sentence that defines X leads, however it scores
        definition = FEATURES.index("definition")
        defining = {_key(c) for c, row in zip(kept, rows) if row[definition]}
        scored.sort(key=lambda c: _key(c) not in defining)
    elif _ASKS_ABOUT_SUBJECT.match(asked.text):  # "What must SMEs do?": a glossary entry of another term comes last
        asked_terms = set(content_terms(asked.text))
        scored.sort(key=lambda c: _entry_of_another_term(asked_terms, c))
    if _DAY_QUESTION.search(asked.text) and any(_FULL_DATE.search(c.text) for c in scored):
        scored = [c for c in scored if _FULL_DATE.search(c.text)]  # "on what date": a day, not a year
    elif asked.kind == "date" and not _YEAR_QUESTION.search(asked.text) and scored:
        # "When was it issued?": a runner-up that gives a day beats a best sentence that gives only a year
        close = scored[:DATE_RUNNERS_UP]
        if not _FULL_DATE.search(scored[0].text) and (dated := [c for c in close if _FULL_DATE.search(c.text)]):
            scored = dated + [c for c in scored if c not in dated]
    return scored


_CAPTION = re.compile(r"^\W*(?:figure|fig\.|table|chart|exhibit|diagram|图|表)\s*\d+", re.IGNORECASE)
_NAMES_A_FIGURE = re.compile(r"\b(?:figures?|fig\.|tables?|charts?|exhibits?|diagrams?)\b|[图表]\s*\d",
                             re.IGNORECASE)
# A question about what its subject does or is ("What must SMEs do?", "How will the plan ..."), not one asking for
# the name of something ("Which phase sits between ...?"), whose answer may well be a glossary term.
_ASKS_ABOUT_SUBJECT = re.compile(r"\s*(?:what|how)\s+(?:must|should|shall|will|would|can|could|may|do|does|did)\b",
                                 re.IGNORECASE)


def _entry_of_another_term(asked_terms: set[str], candidate: Candidate) -> bool:
    """A sentence of a glossary entry whose term shares no word with the question's terms as asked (an acronym
    the retrieval spelt out does not count: "SMEs" is not about "Little Giant Enterprises")."""
    return with_its_term(candidate) != candidate and not set(tokenize(candidate.context)) & asked_terms


def _defined_subject(asked: Question) -> str:
    """The term a definition question asks about ("What is pilot-scale verification?" -> "pilot-scale verification")."""
    if asked.kind != "definition":
        return ""
    match = re.search(r"(?:what is|what's|what are|define|what does|meaning of|definition of|meant by)\s+(?:an? |"
                      r"the term |the )?(.+?)(?:\s+(?:mean|stand for|refer to))?\s*[?？.]?$", asked.text, re.IGNORECASE)
    return fold(match.group(1)).strip("\"'“”‘’ ") if match else ""


def _defines(candidate: Candidate, subject: str) -> bool:
    """The sentence defines the subject: "X is/means ...", or it opens the entry under the term (a glossary)."""
    if not subject:
        return False
    opening = _DEFINES.match(candidate.text)
    if opening and subject in fold(opening.group(1)):
        return True
    first, units = min(candidate.units), candidate.passage.chunk.units
    opens_entry = first == 0 or units[first - 1].label != candidate.context  # the sentences after it elaborate
    return opens_entry and bool(candidate.context) and subject == fold(bare_term(candidate.context))


def _key(candidate: Candidate) -> tuple[str, tuple[int, ...]]:
    return candidate.passage.chunk.chunk_id, candidate.units


def _similarities(asked: Question, candidates: list[Candidate], store: Store, question: str,
                  cross_language: bool) -> dict[tuple[str, tuple[int, ...]], float]:
    """Each candidate's cosine with `question` (its best sentence unit): in the main model, or with
    `cross_language` in the multilingual one where question or passage is Chinese. A candidate whose chunk was
    replaced while we read is left out."""
    multilingual = cross_language and MULTILINGUAL_INDEX in store.indexes
    chunks: dict[str, dict] = {MAIN_INDEX: {}, MULTILINGUAL_INDEX: {}}
    for candidate in candidates:
        chunk = candidate.passage.chunk
        index = MULTILINGUAL_INDEX if multilingual and (asked.cjk or chunk.language == "zh") else MAIN_INDEX
        chunks[index][chunk.chunk_id] = chunk
    found = {}
    for index, wanted in chunks.items():
        if not wanted:
            continue
        vector = store.indexes[index].embedder.embed_query(question)
        stored = sentence_vectors(store, index, wanted)
        for candidate in candidates:
            vectors = stored.get(candidate.passage.chunk.chunk_id)
            if (
                candidate.passage.chunk.chunk_id in wanted
                and vectors is not None
                and max(candidate.units) < len(vectors)
            ):
                found[_key(candidate)] = max(float(vectors[n] @ vector) for n in candidate.units)
    return found


def type_fit(asked: Question, text: str, near: bool) -> float:
    kind = asked.kind
    if kind == "numeric":  # a figure the question does not already give, and not a year ("by 2027")
        given = numbers_in(asked.text)
        quantities = numbers_in(_REFERENCE.sub(" ", text))
        has_number = any(n not in given and not _YEAR.fullmatch(n) for n in quantities) or any(
            _NUMBER_WORD.match(w.lower()) for w in re.findall(r"\w+", text)
        )
        if asked.unit and not UNITS[asked.unit].search(text.lower()):
            return 0.0
        return 1.0 if near else 0.6 if has_number else 0.0
    if kind == "date":  # a day beats a bare year, unless a year is what is asked
        if _FULL_DATE.search(text) or (_DATE.search(text) and _YEAR_QUESTION.search(asked.text)):
            return 1.0
        return 0.6 if _DATE.search(text) else 0.0
    if asked.wants_person:
        return 1.0 if _PERSON.search(text) else 0.6 if new_name(asked, text, person=True) else 0.0
    if kind == "who":
        return 1.0 if _BODY.search(text) else 0.0
    if kind == "list":
        return min(1.0, (text.count(",") + text.count("、") + text.count(" and ")) / 3)
    return 0.5


def new_name(asked: Question, text: str, bodies: bool = False, person: bool = False) -> bool:
    """A name the question does not hold: a person's or a place's ("Luke Kuechly", not "Information Technology"
    asked about, nor "Ministry of ..."), or with `bodies` any named body or initials too; a person's or a place's
    is spelt like one (`_spelt_like_a_name`). A label before a colon and, unless `bodies`, a phrase in quotes
    name nothing. At the start of a line a capital says nothing, so there a name other than a person's takes an
    article and two capitalised words after it ("The South African Schools Act")."""
    asked_words = set(_CAPITALISED.findall(asked.standalone))
    place = not (bodies or person)
    for line in _LEADING_LABEL.sub("", text).split("\n"):
        line = line if bodies else _QUOTED.sub(" ", line)
        if place and any(w not in asked_words and w.lower() not in common_english_words()
                         for w in _LOCATED.findall(line)):
            return True
        for match in (_ENTITY if bodies else _NAME).finditer(line):
            words = _CAPITALISED.findall(match.group())
            if match.start() == 0 and not person:
                words = words[1:] if _ARTICLE.match(match.group()) and len(words) > 2 else []
            if words and not set(words) <= asked_words and (bodies or not (
                    _INSTITUTION.search(match.group()) or _WITH_INITIALS.match(line, match.end()))) and (
                    bodies or _spelt_like_a_name(words, match.group(), place)):
                return True
    return False


def _spelt_like_a_name(words: list[str], name: str, place: bool) -> bool:
    """A person's or a place's name holds a word that is no common English word ("Strategic Action Plan" is nobody
    and "Black Death" no place), or a place's a word that marks one ("United States", "Cape Town")."""
    return (place and bool(_PLACE_MARK.search(name))) or any(
        w.lower() not in common_english_words() and w.lower() not in _MONTHS for w in words)


def figure_for_noun(text: str, asked: Question) -> tuple[bool, bool]:
    """(a figure stands within six words before the counted noun, the words between share a qualifier)."""
    words = re.findall(r"[\w,.]+", text.lower())
    stems = [tokenize(w)[:1] for w in words]
    found, matched = False, False
    for position, word in enumerate(words):
        if not _NUMBER_TOKEN.match(word.strip(",.")):
            continue
        for offset, stem in enumerate(stems[position + 1:position + 7], start=position + 1):
            if stem == [asked.head_noun]:
                found = True
                between = {s[0] for s in stems[position + 1:offset] if s}
                matched = matched or not asked.modifiers or bool(between & set(asked.modifiers))
                break
    return found, matched
