"""Answers with verified citations: the extractive answerer (default, no LLM), the LLM path, abstention.

`answer()` is what the CLI, the chat and the evaluation call. Every `[n]` in `Answer.text` is put there by
code from a `Citation`, and every sentence passes the grounding check against the passage it cites.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from rag.chunking import is_term_line, sentence_units
from rag.documents import Answer, Citation
from rag.grounding import fold, numbers_in, spelling_key, unsupported_reason
from rag.lexical import tokenize
from rag.questions import Question, analyse
from rag.selection import FEATURES, load_model
from rag.retrieval import Retrieved, search, sentence_vectors
from rag.store import MAIN_INDEX, MULTILINGUAL_INDEX, Filters, Store

_NUMBER_TOKEN = re.compile(r"^\d[\d,.]*$|^(one|two|three|four|five|six|seven|eight|nine|ten|dozen|hundred|thousand)$")
_DATE = re.compile(r"\b(19|20)\d{2}\b|\b\d{1,2}/\d{1,2}/\d{4}\b|\b(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d",
                   re.IGNORECASE)
# A named body: an institution word, an acronym of capitals, or two capitalised words in a row.
_BODY = re.compile(r"\b(Ministry|Department|Administration|Commission|Bureau|Council|Agency|Authority|University|News|"
                   r"Institute|Office|Fund|Center|Centre|Regulator|Court|Parliament|Government|Committee|Board)\b|"
                   r"\b[A-Z]{2,6}\b|\b[A-Z][a-z]+ [A-Z][a-z]+\b")
# A person's name, recognised by a title or a reporting verb next to it ("Wu Yin, Professor at ...").
_PERSON = re.compile(r"\b(?:Professor|Minister|Director|Chairman|Mr\.?|Ms\.?|Dr\.?)\s+[A-Z][a-z]+ [A-Z][a-z]+|"
                     r"\b[A-Z][a-z]+ [A-Z][a-z]+,\s+(?:Professor|Director|Minister|Chairman|Head|Vice|Deputy)|"
                     r"\b[A-Z][a-z]+ [A-Z][a-z]+ (?:told|said|stated)\b")
_UNITS = {"percent": re.compile(r"%|percent|per cent"), "currency": re.compile(r"yuan|rmb|¥|\$|dollar|euro|billion|million")}
# How many sentences an answer quotes at most, and what share of the best one's probability a further
# sentence needs (bench/fit_selection.py reports the trade of fact recall against length).
MAX_SENTENCES = {"list": 4, "summary": 4}
DEFAULT_MAX_SENTENCES = 2
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
    retrieval = search(store, settings, asked.standalone, k=k, filters=filters)
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


def extractive_answer(asked: Question, passages: list[Retrieved], store: Store, settings) -> Answer:
    """One to four sentences quoted verbatim from the passages, best first, each with its citation."""
    if not passages:
        return abstention(asked, passages, "nothing relevant is stored")
    missing = _missing_required(asked, passages)
    if missing:
        return abstention(asked, passages, f"they never mention {missing}")
    if asked.kind == "summary" and (summary := _summary(passages, store)):
        return summary
    every = _candidates(passages, asked.kind == "list")
    problem = _numeric_problem(asked, every) if asked.kind == "numeric" else None
    if problem:
        return abstention(asked, passages, problem)
    candidates = _score(asked, every, store)
    if not candidates:
        wanted = {"numeric": "a figure", "date": "a date"}.get(asked.kind, "a person's name")
        return abstention(asked, passages, f"no passage on this gives {wanted}")
    best = candidates[0]
    if asked.kind in ("numeric", "date") or asked.wants_person:
        subject = _subject_without_typed_answer(asked, every)
        if subject:
            wanted = "date" if asked.kind == "date" else "figure" if asked.kind == "numeric" else "name"
            return abstention(asked, passages, f"they mention {subject} but give no {wanted} for it")
    threshold = load_model().abstain_below if settings.abstain_threshold is None else settings.abstain_threshold
    if best.support < threshold:
        return replace(abstention(asked, passages, f"no sentence of the passages is likely to answer it "
                                                   f"(best {best.support:.2f} < {threshold:.2f})"), support=best.support)
    chosen = _compose(asked, candidates)
    return replace(cited_answer(chosen, passages), support=best.support)


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
        units = sentence_units(chunk.text, chunk.section)
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
    """The candidates that can be scored (their chunk's vectors are at hand) and a row of `FEATURES` for each."""
    question_vector, stored = _sentence_vectors(asked, candidates, store)
    kept, similarities = [], []
    for candidate in candidates:
        vectors = stored.get(candidate.passage.chunk.chunk_id)
        if vectors is None or max(candidate.units) >= len(vectors):
            continue  # the chunk was replaced while we were reading it
        kept.append(candidate)
        similarities.append(max(float(vectors[n] @ question_vector) for n in candidate.units))
    if not kept:
        return [], np.zeros((0, len(FEATURES)))
    terms = list(dict.fromkeys(asked.terms))
    tokens = [set(tokenize(c.text)) for c in kept]
    frequency = {t: sum(1 for own in tokens if t in own) for t in terms}
    rarity = {t: np.log(1 + len(kept) / (1 + frequency[t])) for t in terms}
    best = max(similarities)
    order = {n: rank for rank, n in enumerate(sorted(range(len(kept)), key=lambda n: -similarities[n]))}
    subject = _defined_subject(asked)
    rows = []
    for n, candidate in enumerate(kept):
        context = set(tokenize(candidate.context + " " + candidate.passage.chunk.section))
        near = _figure_for_noun(candidate.text, asked)[0] if asked.head_noun else False
        words = len(re.findall(r"\w+", candidate.text))
        share = (lambda found: sum(1 for t in terms if t in found) / len(terms)) if terms else (lambda found: 0.0)
        rare = (sum(rarity[t] for t in terms if t in tokens[n]) / sum(rarity.values())) if terms else 0.0
        features = {
            "similarity": similarities[n], "similarity_gap": similarities[n] - best,
            "similarity_rank": 1 / (1 + order[n]), "terms": share(tokens[n]), "rare_terms": rare,
            "heading_terms": share(context), "type_fit": _type_fit(asked, candidate.text, near),
            "figure_for_noun": float(near), "definition": float(_defines(candidate, subject)),
            "passage_rank": 1 / candidate.passage.rank, "position": 1 / (1 + min(candidate.units)),
            "log_words": float(np.log1p(words)), "short": float(words < 6), "block": float(candidate.is_block),
            "truncated": float(candidate.text.rstrip().endswith(_ELLIPSIS)), "cjk": float(asked.cjk),
            **{f"kind_{kind}": float(asked.kind == kind) for kind in
               ("numeric", "date", "who", "list", "definition", "condition", "summary")},
        }
        rows.append([features[name] for name in FEATURES])
    return kept, np.asarray(rows, dtype=float)


def _score(asked: Question, candidates: list[Candidate], store: Store) -> list[Candidate]:
    """Each candidate with its probability of holding the answer (the fitted selection model), best first."""
    kept, rows = candidate_features(asked, candidates, store)
    probabilities = load_model().probability(rows)
    figure = FEATURES.index("figure_for_noun")
    scored = [replace(c, support=round(float(p), 4), has_number_for_noun=bool(row[figure]))
              for c, p, row in zip(kept, probabilities, rows)]
    if asked.kind in ("numeric", "date") or asked.wants_person:  # strict types: the answer must carry a figure/date/name
        scored = [c for c in scored if _type_fit(asked, c.text, c.has_number_for_noun) > 0]
    return sorted(scored, key=lambda c: (-c.support, c.passage.rank, c.start))


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


def _sentence_vectors(asked: Question, candidates: list[Candidate], store: Store) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The question's vector and each candidate chunk's sentence vectors (a row per sentence unit), in the main
    model, or for a Chinese question in the multilingual one."""
    chunks = {c.passage.chunk.chunk_id: c.passage.chunk for c in candidates}
    index = MULTILINGUAL_INDEX if asked.cjk and MULTILINGUAL_INDEX in store.indexes else MAIN_INDEX
    return store.indexes[index].embedder.embed_query(asked.standalone), sentence_vectors(store, index, chunks)


def _type_fit(asked: Question, text: str, near: bool) -> float:
    kind = asked.kind
    if kind == "numeric":
        has_number = any(_NUMBER_TOKEN.match(w.lower()) for w in re.findall(r"[\w,.]+", text))
        if asked.unit and not _UNITS[asked.unit].search(text.lower()):
            return 0.0
        return 1.0 if near else 0.6 if has_number else 0.0
    if kind == "date":
        return 1.0 if _DATE.search(text) else 0.0
    if asked.wants_person:
        return 1.0 if _PERSON.search(text) else 0.0
    if kind == "who":
        return 1.0 if _BODY.search(text) else 0.0
    if kind == "list":
        return min(1.0, (text.count(",") + text.count("、") + text.count(" and ")) / 3)
    return 0.5


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


def _missing_required(asked: Question, passages: list[Retrieved]) -> str | None:
    """A year, figure or name from the question that none of the passages contains."""
    if asked.cjk:
        return None
    text = " ".join(p.chunk.text + " " + p.chunk.title for p in passages)
    numbers, names = numbers_in(text), spelling_key(text)
    for term in asked.required:
        if (term.replace(",", "") not in numbers) if term[0].isdigit() else (spelling_key(term) not in names):
            return term
    return None


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
    if mentions and not any(found for found, _ in figures):
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


def check_answer(answer_: Answer, mode: str) -> Answer:
    """The output filter: drop (or flag) sentences whose cited passage does not support them."""
    if answer_.abstained:
        return answer_
    kept_citations = []
    kept_parts = []
    removed = 0
    by_marker = {c.marker: c for c in answer_.citations}
    passages = {r.chunk.chunk_id: r.chunk.text for r in answer_.retrieved}
    for sentence in split_cited_sentences(answer_.text):
        markers = [int(m) for m in re.findall(r"\[(\d+)\]", sentence)]
        cited = [by_marker[m] for m in markers if m in by_marker]
        reasons = [unsupported_reason(sentence, passages.get(c.chunk_id, c.quote)) for c in cited]
        if cited and any(r is None for r in reasons):
            kept_parts.append(sentence)
            kept_citations.extend(c for c, r in zip(cited, reasons) if r is None)
            continue
        removed += 1
        if mode == "flag":
            kept_parts.append(f"{sentence} (unsupported: {reasons[0] if reasons and reasons[0] else 'no citation'})")
            kept_citations.extend(cited)
    if removed == 0:
        return answer_
    if not kept_citations:
        return replace(answer_, text="The ingested documents do not support an answer to this question "
                                     "(every sentence drafted was unsupported by its sources).",
                       citations=(), abstained=True, reason="no sentence was supported by its cited passage",
                       removed=removed)
    notice = f"{removed} unsupported sentence{'s' if removed > 1 else ''} {'flagged' if mode == 'flag' else 'removed'}."
    return replace(answer_, text=" ".join(kept_parts), citations=tuple(dict.fromkeys(kept_citations)),
                   removed=removed, notices=answer_.notices + (notice,), reason=notice)


def split_cited_sentences(text: str) -> list[str]:
    """The answer cut after each group of markers: each piece is the text those markers cite; an uncited tail
    is a piece of its own."""
    pieces = [m.group(0).strip() for m in re.finditer(r".*?(?:\s*\[\d+\])+[.。]?", text.strip(), re.DOTALL)]
    tail = re.sub(r"^.*(?:\[\d+\])+[.。]?", "", text.strip(), flags=re.DOTALL).strip() if pieces else text.strip()
    return [p for p in pieces if p] + ([tail] if tail else [])
