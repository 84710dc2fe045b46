"""Answers with verified citations: the extractive answerer (default, no LLM), the LLM path, abstention.

`answer()` is what the CLI, the chat and the evaluation call. Every `[n]` in `Answer.text` is put there by
code from a `Citation`, and every sentence passes the grounding check against the passage it cites.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Iterator

import numpy as np

from rag.chunking import is_term_line
from rag.documents import Answer, Citation, Filters
from rag.grounding import check_answer, fold, numbers_in, spelling_key
from rag.lexical import tokenize, word_count
from rag.questions import Question, analyse, content_terms, expand_acronyms
from rag.selection import FEATURES, load_model
from rag.translation import translate
from rag.retrieval import Retrieved, RetrievalResult, search, sentence_vectors
from rag.index_layout import MAIN_INDEX, MULTILINGUAL_INDEX
from rag.store import Store

_NUMBER_TOKEN = re.compile(r"^\d[\d,.]*$|^(one|two|three|four|five|six|seven|eight|nine|ten|dozen|hundred|thousand)$")
_DATE = re.compile(r"\b(1[0-9]|20)\d{2}s?\b|\b\d{1,2}(st|nd|rd|th) century\b|\b\d{1,2}/\d{1,2}/\d{4}\b|\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d|"
                   r"(1[0-9]|20)\d{2}\s*年|\d{1,2}\s*月\s*\d{1,2}\s*日", re.IGNORECASE)
_FULL_DATE = re.compile(r"\b\d{1,2}/\d{1,2}/\d{4}\b|\b\d{4}-\d{2}-\d{2}\b|\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
                        r"[a-z]*\.?\s+\d{1,2}\b|\b\d{1,2}\s+(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b|"
                        r"\d{1,2}\s*月\s*\d{1,2}\s*日", re.IGNORECASE)
_DAY_QUESTION = re.compile(r"\b(on )?what (date|day)\b|\bwhich (date|day)\b|哪一?天|几月几[日号]|什么日期", re.IGNORECASE)
_YEAR_QUESTION = re.compile(r"\b(what|which|in what) year\b|哪一?年|\bwhat decade\b", re.IGNORECASE)
_DIGIT = re.compile(r"(?<![A-Za-z])\d")  # a figure, also inside unspaced Chinese text ("不得高于1.25")
# A named body: an institution word, an acronym of capitals, or two capitalised words in a row.
_INSTITUTION_WORDS = ("Ministry|Department|Administration|Commission|Bureau|Council|Agency|Authority|University|"
                      "Institute|Office|Fund|Center|Centre|Committee|Board|Court")
_BODY = re.compile(rf"\b({_INSTITUTION_WORDS}|News|Regulator|Parliament|Government)\b|\b[A-Z]{{2,6}}\b|"
                   r"\b[A-Z][a-z]+ [A-Z][a-z]+\b")
# A person's name, recognised by a title or a reporting verb next to it ("Wu Yin, Professor at ...").
_PERSON = re.compile(r"\b(?:Professor|Minister|Director|Chairman|Mr\.?|Ms\.?|Dr\.?)\s+[A-Z][a-z]+ [A-Z][a-z]+|"
                     r"\b[A-Z][a-z]+ [A-Z][a-z]+,\s+(?:Professor|Director|Minister|Chairman|Head|Vice|Deputy)|"
                     r"\b[A-Z][a-z]+ [A-Z][a-z]+ (?:told|said|stated)\b")
_ENTITY = re.compile(r"\b[A-Z][a-z'’]+(?:\s+(?:of\s+|and\s+|the\s+)?[A-Z][a-z'’]+)+\b|\b[A-Z]{2,}\b")
_NAME_PAIR = re.compile(r"\b[A-Z][a-z'’]+(?:\s+[A-Z][a-z'’]+)+\b")
_INSTITUTION = re.compile(rf"\b({_INSTITUTION_WORDS}|Association|Company|Group|Bank)\b")
_CAPITALISED = re.compile(r"[A-Z][\w'’]+")
_UNITS = {"percent": re.compile(r"%|percent|per cent|百分"),
          "currency": re.compile(r"yuan|rmb|¥|\$|dollar|euro|billion|million|元")}
# How many sentences an answer quotes at most, and what share of the best one's probability a further
# sentence needs (bench/fit_selection.py reports the trade of fact recall against length).
MAX_SENTENCES = {"list": 4, "summary": 4}
DEFAULT_MAX_SENTENCES = 2
DATE_RUNNERS_UP = 2  # how far down a "when" question looks for a sentence with a day in it
LIST_KEEP, OTHER_KEEP = 0.4, 0.5
_DEFINES = re.compile(r"^\W*(?:an? |the )?(.{2,80}?)\s+(?:is|are|means|refers to|denotes|stands for|is defined as|"
                      r"shall mean)\b", re.IGNORECASE)
_ELLIPSIS = ("…", "...")
_SUMMARY_HEADING = re.compile(r"summar|overview|abstract|conclusion|takeaway|purpose|introduction|executive|"
                              r"概述|摘要|总结|前言|引言", re.IGNORECASE)


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


def answer(question: str, settings, *, store: Store, history: tuple[str, ...] = (), filters: Filters | None = None,
           k: int | None = None, answerer: str | None = None) -> Answer:
    """Answer `question` from the stored documents, or abstain; see the module docstring."""
    final = None
    for item in stream_answer(question, settings, store=store, history=history, filters=filters, k=k, answerer=answerer):
        if isinstance(item, Answer):
            final = item
    return final


def stream_answer(question: str, settings, *, store: Store, history: tuple[str, ...] = (),
                  filters: Filters | None = None, k: int | None = None,
                  answerer: str | None = None) -> Iterator[str | Answer]:
    """Text pieces as they are produced (the LLM streams; the extractive answer comes whole), then the Answer."""
    started = time.perf_counter()
    answerer = answerer or settings.answerer
    asked = analyse(question, tuple(history), settings.max_question_chars)
    if answerer == "llm" and history and settings.llm_model:
        from rag.llm import rewrite_question

        asked = replace(asked, standalone=rewrite_question(asked.text, tuple(history), settings) or asked.standalone)
    asked, retrieval = retrieve(asked, store, settings, k=k, filters=filters)
    timings = {"retrieval_ms": round((time.perf_counter() - started) * 1000, 2), **retrieval.timings}
    passages = retrieval.passages
    extract_started = time.perf_counter()
    extracted = extractive_answer(asked, passages, store, settings)
    timings["extract_ms"] = round((time.perf_counter() - extract_started) * 1000, 2)
    result = extracted
    if answerer == "llm":
        from rag.llm import stream_llm_answer

        for item in stream_llm_answer(asked, passages, settings, fallback=extracted):
            if isinstance(item, Answer):
                result = item
            else:
                yield item
    result = check_answer(result, settings.unsupported)
    if answerer != "llm":
        yield result.text
    timings["total_ms"] = round((time.perf_counter() - started) * 1000, 2)
    if asked.injection:
        result = replace(result, notices=result.notices + (
            f"The question contains instructions to the assistant ({', '.join(asked.injection)}); it was answered "
            "from the documents as a plain question and the instructions were not followed.",))
    yield replace(result, timings={**timings, **result.timings}, question=asked.standalone)


def retrieve(asked: Question, store: Store, settings, *, k: int | None = None,
             filters: Filters | None = None) -> tuple[Question, RetrievalResult]:
    """The passages for the question; an acronym the first passages spell out is asked again spelled out."""
    retrieval = search(store, settings, asked.standalone, k=k, filters=filters)
    expanded = expand_acronyms(asked.standalone, [p.chunk.text for p in retrieval.passages])
    if expanded == asked.standalone:
        return asked, retrieval
    asked = replace(asked, standalone=expanded, terms=tuple(content_terms(expanded)))
    return asked, search(store, settings, expanded, k=k, filters=filters)


def extractive_answer(asked: Question, passages: list[Retrieved], store: Store, settings) -> Answer:
    """One to four sentences quoted verbatim from the passages, best first, each with its citation."""
    if not passages:
        return abstention(asked, passages, "nothing relevant is stored")
    missing = _missing_required(asked, passages, store)
    if missing:
        return abstention(asked, passages, f"they never mention {missing}")
    if asked.kind == "summary" and (summary := _summary(passages, store)):
        return summary
    every = _candidates(passages, asked.kind == "list")
    problem = _numeric_problem(asked, every) if asked.kind == "numeric" else None
    if problem:
        return abstention(asked, passages, problem)
    kept, rows = candidate_features(asked, every, store)
    model = load_model()
    probabilities = model.probability(rows)
    answerable = round(model.answerable_probability(rows, probabilities), 4)
    candidates = _ranked(asked, kept, rows, probabilities)
    if not candidates:
        wanted = ({"numeric": "a figure", "date": "a date"}.get(asked.kind)
                  or (f"the name of a {asked.wants_name_of}" if asked.wants_name_of else "a person's name"))
        return abstention(asked, passages, f"no passage on this gives {wanted}")
    if asked.kind in ("numeric", "date") or asked.wants_person:
        subject = _subject_without_typed_answer(asked, every)
        if subject:
            wanted = "date" if asked.kind == "date" else "figure" if asked.kind == "numeric" else "name"
            return abstention(asked, passages, f"they mention {subject} but give no {wanted} for it")
    threshold = model.abstain_below if settings.abstain_threshold is None else settings.abstain_threshold
    if answerable < threshold:
        return replace(abstention(asked, passages, f"the passages are unlikely to answer it "
                                                   f"(probability {answerable:.2f} < {threshold:.2f})"), support=answerable)
    chosen = _compose(asked, candidates)
    return replace(cited_answer(chosen, passages), support=answerable)


def _summary(passages: list[Retrieved], store: Store) -> Answer | None:
    """A summary question gets the document's own summary: the longest sentences of its sections headed like one
    (overview, summary, key takeaways ...), or of its opening passage, quoted in document order."""
    chunks = store.document_chunks(passages[0].chunk.doc_id)
    headed = [c for c in chunks if _SUMMARY_HEADING.search(c.section)] or chunks[:1]
    own = [Retrieved(chunk, 0.0, rank) for rank, chunk in enumerate(headed, start=1)]
    sentences = [c for c in _candidates(own) if len(re.findall(r"\w+", c.text)) >= 6
                 and not c.text.rstrip().endswith(_ELLIPSIS)]
    if not sentences:
        return None
    longest = sorted(sentences, key=lambda c: -len(c.text))[:MAX_SENTENCES["summary"]]
    return cited_answer(sorted(longest, key=lambda c: c.start), own + passages)


def cited_answer(chosen: list[Candidate], passages: list[Retrieved], answerer: str = "extractive") -> Answer:
    citations = []
    parts = []
    for marker, candidate in enumerate(chosen, start=1):
        chunk = candidate.passage.chunk
        citations.append(Citation(marker, chunk.chunk_id, chunk.doc_id, chunk.title, chunk.section, candidate.text,
                                  candidate.start, candidate.end, chunk.published))
        parts.append(f"{_display(candidate.text)} [{marker}]")
    return Answer(" ".join(parts), tuple(citations), tuple(passages), False, answerer=answerer)


def abstention(asked: Question, passages: list[Retrieved], why: str) -> Answer:
    text = (f"The ingested documents do not answer this question ({why}). "
            + ("The closest passages are listed as related." if passages else ""))
    return Answer(text.strip(), (), tuple(passages), True, reason=why)


def _display(sentence: str) -> str:
    """A bullet line reads as a sentence: no leading dash; a trailing full stop if it has none (an ellipsis the
    source has stays as it is)."""
    text = re.sub(r"^[-•*]\s+", "", sentence.strip())
    return text if text.endswith((".", "!", "?", "。", "！", "？", ":", "；") + _ELLIPSIS) else text + "."


def _candidates(passages: list[Retrieved], list_question: bool = False) -> list[Candidate]:
    """The sentence units of the passages (as the vector index holds them) and, for lists, bullet blocks."""
    seen: set[str] = set()
    found = []
    for passage in passages:
        chunk = passage.chunk
        units = list(chunk.units)
        for number, unit in enumerate(units):
            text = unit.text(chunk.text)
            key = fold(text)
            if key in seen or len(re.findall(r"\w+", text)) < 3 or text.endswith(("?", "？")) or is_term_line(text):
                continue  # a question, or a bare term or title, is not an answer
            seen.add(key)
            found.append(Candidate(passage, chunk.start + unit.start, chunk.start + unit.end, text, unit.label,
                                   units=(number,)))
        if list_question:  # a label with its bullet lines answers "what are the X"; elsewhere its one line does
            found.extend(_blocks(passage, units, seen))
    return found


def _blocks(passage: Retrieved, units, seen: set[str]) -> list[Candidate]:
    """Runs of two or more bullet lines under one label ('Model Selection:' ...) as one list candidate."""
    chunk = passage.chunk
    blocks, run = [], []
    for number, unit in enumerate(units + [None]):
        is_bullet = unit is not None and chunk.text[:unit.start].rstrip(" ").endswith(("\n-", "\n•", "\n*"))
        if run and (unit is None or not is_bullet or unit.label != units[run[0]].label):
            if len(run) >= 2 and units[run[0]].label:
                first, last = units[run[0]], units[run[-1]]
                label_at = chunk.text.rfind(first.label, 0, first.start)
                start = label_at if label_at >= 0 else first.start
                text = chunk.text[start:last.end]
                if fold(text) not in seen:
                    seen.add(fold(text))
                    blocks.append(Candidate(passage, chunk.start + start, chunk.start + last.end, text, first.label,
                                            is_block=True, units=tuple(run)))
            run = []
        if unit is not None and is_bullet:
            run.append(number)
    return blocks


def candidate_features(asked: Question, candidates: list[Candidate], store: Store) -> tuple[list[Candidate], np.ndarray]:
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
    own_terms, english_terms = list(dict.fromkeys(asked.terms)), list(dict.fromkeys(tokenize(english)))
    term_lists = [english_terms if english and c.passage.chunk.language != "zh" else own_terms for c in kept]
    tokens = [set(tokenize(c.text)) for c in kept]
    frequency = {t: sum(1 for own in tokens if t in own) for t in set(own_terms) | set(english_terms)}
    rarity = {t: np.log(1 + len(kept) / (1 + frequency[t])) for t in frequency}
    everywhere = set().union(*tokens, *(tokenize(c.context) for c in kept))
    anywhere = [sum(1 for t in terms if t in everywhere) / len(terms) if terms else 0.0 for terms in term_lists]
    best = max(similarities)
    order = {n: rank for rank, n in enumerate(sorted(range(len(kept)), key=lambda n: -similarities[n]))}
    subject = _defined_subject(asked)
    rows = []
    for n, candidate in enumerate(kept):
        terms = term_lists[n]
        context = set(tokenize(candidate.context + " " + candidate.passage.chunk.section))
        near = _figure_for_noun(candidate.text, asked)[0] if asked.head_noun else False
        fit = _type_fit(asked, candidate.text, near)
        words = word_count(candidate.text)
        share = (lambda found: sum(1 for t in terms if t in found) / len(terms)) if terms else (lambda found: 0.0)
        rare = (sum(rarity[t] for t in terms if t in tokens[n]) / sum(rarity[t] for t in terms)) if terms else 0.0
        features = {
            "similarity": similarities[n], "similarity_gap": similarities[n] - best,
            "translated_similarity": translated.get(_key(candidate), 0.0),
            "similarity_rank": 1 / (1 + order[n]), "terms": share(tokens[n]), "rare_terms": rare,
            "heading_terms": share(context),
            **{f"type_fit_{kind}": fit if asked.kind == kind or (kind == "who" and asked.wants_person) else 0.0
               for kind in ("numeric", "date", "who", "list")},
            "figure_for_noun": float(near), "definition": float(_defines(candidate, subject)),
            "passage_rank": 1 / candidate.passage.rank, "position": 1 / (1 + min(candidate.units)),
            "log_words": float(np.log1p(words)), "short": float(words < 6), "block": float(candidate.is_block),
            "truncated": float(candidate.text.rstrip().endswith(_ELLIPSIS)),
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


def _ranked(asked: Question, kept: list[Candidate], rows: np.ndarray, probabilities: np.ndarray) -> list[Candidate]:
    """The candidates with their probability of holding the answer, best first."""
    figure = FEATURES.index("figure_for_noun")
    scored = [replace(c, support=round(float(p), 4), has_number_for_noun=bool(row[figure]))
              for c, p, row in zip(kept, probabilities, rows)]
    if asked.kind in ("numeric", "date") or asked.wants_person:  # strict types: the answer must carry a figure/date/name
        scored = [c for c in scored if _type_fit(asked, c.text, c.has_number_for_noun) > 0]
    if asked.wants_name_of:  # "in which city": the sentence must name something the question does not
        scored = [c for c in scored if _new_name(asked, c.text, _ENTITY, institutions=True)]
    scored.sort(key=lambda c: (-c.support, c.passage.rank, c.start))
    if _DAY_QUESTION.search(asked.text) and any(_FULL_DATE.search(c.text) for c in scored):
        scored = [c for c in scored if _FULL_DATE.search(c.text)]  # "on what date": a day, not a year
    elif asked.kind == "date" and not _YEAR_QUESTION.search(asked.text) and scored:
        # "When was it issued?": a runner-up that gives a day beats a best sentence that gives only a year
        close = scored[:DATE_RUNNERS_UP]
        if not _FULL_DATE.search(scored[0].text) and (dated := [c for c in close if _FULL_DATE.search(c.text)]):
            scored = dated + [c for c in scored if c not in dated]
    return scored


def _defined_subject(asked: Question) -> str:
    """The term a definition question asks about ("What is pilot-scale verification?" -> "pilot-scale verification")."""
    if asked.kind != "definition":
        return ""
    match = re.search(r"(?:what is|what's|what are|define|what does|meaning of|definition of|meant by)\s+"
                      r"(?:an? |the term |the )?(.+?)(?:\s+(?:mean|stand for|refer to))?\s*[?？]?$", asked.text, re.IGNORECASE)
    return fold(match.group(1)).strip("\"'“”‘’ ") if match else ""


def _defines(candidate: Candidate, subject: str) -> bool:
    """The sentence defines the subject: "X is/means ...", or it sits right under the term (a glossary entry)."""
    if not subject:
        return False
    opening = _DEFINES.match(candidate.text)
    return bool(opening and subject in fold(opening.group(1))) or (bool(candidate.context) and subject == fold(candidate.context))


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
            if candidate.passage.chunk.chunk_id in wanted and vectors is not None and max(candidate.units) < len(vectors):
                found[_key(candidate)] = max(float(vectors[n] @ vector) for n in candidate.units)
    return found


def _type_fit(asked: Question, text: str, near: bool) -> float:
    kind = asked.kind
    if kind == "numeric":
        has_number = bool(_DIGIT.search(text)) or any(_NUMBER_TOKEN.match(w.lower()) for w in re.findall(r"[\w,.]+", text))
        if asked.unit and not _UNITS[asked.unit].search(text.lower()):
            return 0.0
        return 1.0 if near else 0.6 if has_number else 0.0
    if kind == "date":  # a day beats a bare year, unless a year is what is asked
        if _FULL_DATE.search(text) or (_DATE.search(text) and _YEAR_QUESTION.search(asked.text)):
            return 1.0
        return 0.6 if _DATE.search(text) else 0.0
    if asked.wants_person:
        return 1.0 if _PERSON.search(text) else 0.6 if _new_name(asked, text) else 0.0
    if kind == "who":
        return 1.0 if _BODY.search(text) else 0.0
    if kind == "list":
        return min(1.0, (text.count(",") + text.count("、") + text.count(" and ")) / 3)
    return 0.5


def _new_name(asked: Question, text: str, names: re.Pattern = _NAME_PAIR, institutions: bool = False) -> bool:
    """A name (`names`: a run of capitalised words by default) past the start of the text, not made only of words
    the question itself holds, and unless `institutions` no institution ("Luke Kuechly", not "Information
    Technology" asked about, nor "Ministry of ...")."""
    asked_words = set(_CAPITALISED.findall(asked.standalone))
    for match in names.finditer(text):
        if (match.start() > 0 and not set(_CAPITALISED.findall(match.group())) <= asked_words
                and (institutions or not _INSTITUTION.search(match.group()))):
            return True
    return False


def _figure_for_noun(text: str, asked: Question) -> tuple[bool, bool]:
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


def _missing_required(asked: Question, passages: list[Retrieved], store: Store) -> str | None:
    """A year, figure or name from the question that none of the passages' documents contains (the passage that
    answers "How many 2015 interceptions?" need not say 2015 itself, but its article must)."""
    if asked.cjk:
        return None
    documents = {(p.chunk.doc_id, p.chunk.doc_sha256): p.chunk.title for p in passages}  # each document once
    keys = [_document_keys(store, doc_id, version) for doc_id, version in documents]
    numbers = set().union(*(n for n, _ in keys))
    names = " ".join(k for _, k in keys) + " ".join(spelling_key(title) for title in documents.values())
    for term in asked.required:
        if (term.replace(",", "") not in numbers) if term[0].isdigit() else not _named_in(term, names):
            return term
    return None


def _named_in(name: str, names: str) -> bool:
    """The name is there, or each of its words is, or its longest word is (a name quoted in part or misspelt
    elsewhere: "Lor Loudoun"; but "United States" is not named by a text that only says "state")."""
    words = spelling_key(name).split()
    present = [f" {w} " in names for w in words]
    return spelling_key(name) in names or all(present) or present[max(range(len(words)), key=lambda n: len(words[n]))]


@lru_cache(maxsize=256)
def _document_keys(store: Store, doc_id: str, version: str) -> tuple[frozenset[str], str]:
    """The figures and the name key of one version of a document (read once per version)."""
    text = store.document_text(doc_id) or ""
    return frozenset(numbers_in(text)), spelling_key(text)


def _subject_without_typed_answer(asked: Question, candidates: list[Candidate]) -> str | None:
    """A name from the question whose passages carry no sentence of the asked type ('Overseas Version': no date)."""
    for name in (t for t in asked.required if not t[0].isdigit()):
        about = [c for c in candidates if spelling_key(name) in spelling_key(c.passage.chunk.text)]
        if about and not any(_type_fit(asked, c.text, False) > 0 or (asked.kind == "numeric" and _NUMBER_IN.search(c.text))
                             for c in about):
            return name
    return None


_NUMBER_IN = re.compile(r"\d")


def _numeric_problem(asked: Question, candidates: list[Candidate]) -> str | None:
    """A count the documents never give: no amount in the asked unit, or the counted thing never with a figure."""
    if asked.unit and not any(_UNITS[asked.unit].search(c.text.lower()) for c in candidates):
        return f"no passage gives an amount in {asked.unit}"
    if not asked.head_noun:
        return None
    mentions = [c for c in candidates if _mentions_counted_thing(c.text, asked)]
    figures = [_figure_for_noun(c.text, asked) for c in mentions]
    thing = " ".join(re.findall(r"[\w-]+", _counted_text(asked.standalone))) or asked.head_noun
    if any(found for found, _ in figures) and not any(found and matched for found, matched in figures):
        return f"they give figures for other kinds of {thing.split()[-1]}, not for {thing}"
    if asked.modifiers and mentions and not any(found for found, _ in figures):  # "humanoid robots", never counted
        return f"they mention {thing} but give no number for them"
    return None


def _mentions_counted_thing(text: str, asked: Question) -> bool:
    """The counted noun, with one of the question's qualifiers right before it ('humanoid robots')."""
    stems = [t[0] if t else "" for t in (tokenize(w) for w in re.findall(r"[\w,.]+", text.lower()))]
    for position, stem in enumerate(stems):
        if stem == asked.head_noun and (not asked.modifiers or (position and stems[position - 1] in asked.modifiers)):
            return True
    return False


def _counted_text(question: str) -> str:
    match = re.search(r"\bhow (?:many|much)\s+([\w\s\"'-]+?)(?:\s+(?:are|is|will|must|should|to|by|in|under|per)\b|\?|$)",
                      question, re.IGNORECASE)
    return match.group(1) if match else ""


def _compose(asked: Question, candidates: list[Candidate]) -> list[Candidate]:
    """The best sentence first, then close runners-up that add something (several for list questions)."""
    best = candidates[0]
    chosen = [best]
    keep = LIST_KEEP if asked.kind == "list" else OTHER_KEEP
    limit = MAX_SENTENCES.get(asked.kind, DEFAULT_MAX_SENTENCES)
    covered = set(tokenize(best.text))
    for candidate in candidates[1:]:
        if len(chosen) >= limit or candidate.support < keep * best.support:
            break
        tokens = set(tokenize(candidate.text))
        if len(tokens - covered) < 3:  # adds nothing new
            continue
        if asked.kind == "numeric" and not candidate.has_number_for_noun and best.has_number_for_noun:
            continue
        chosen.append(candidate)
        covered |= tokens
    return chosen
