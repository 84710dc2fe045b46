"""Answers with verified citations: the pipeline, the extractive answerer (default, no LLM), the LLM path.

`answer()` is what the CLI, the chat and the evaluation call. Every `[n]` in `Answer.text` is put there by
code from a `Citation`, and every sentence passes the grounding check against the passage it cites.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace

from rag.abstention import after_ranking, before_ranking
from rag.candidates import (
    ELLIPSIS,
    Candidate,
    candidate_features,
    continues,
    rank_candidates,
    sentence_candidates,
    with_its_antecedent,
    with_its_term,
)
from rag.chunking import is_term_line, without_bullet
from rag.documents import Answer, Citation, Filters
from rag.embedding import second_opinion_reader
from rag.grounding import check_answer
from rag.lexical import tokenize, word_count
from rag.questions import Question, analyse, content_terms, expand_acronyms
from rag.retrieval import RetrievalResult, Retrieved, search
from rag.selection import load_model, second_opinion
from rag.settings import Settings
from rag.store import Store

# How many sentences an answer quotes at most, and what share of the best one's probability a further
# sentence needs (bench/fit_selection.py reports the trade of fact recall against length).
MAX_SENTENCES = {"list": 4, "summary": 4}
DEFAULT_MAX_SENTENCES = 2
LIST_KEEP, OTHER_KEEP = 0.4, 0.5
# The sentence that continues the best one's paragraph joins it first when it has this share of the best
# probability (the answer often goes on there: bench/fit_selection.py reports the trade).
CONTINUATION_KEEP = 0.2
_SUMMARY_HEADING = re.compile(r"summar|overview|abstract|conclusion|takeaway|purpose|introduction|executive|"
                              r"概述|摘要|总结|前言|引言", re.IGNORECASE)


def answer(
    question: str,
    settings: Settings,
    *,
    store: Store,
    history: tuple[str, ...] = (),
    filters: Filters | None = None,
    k: int | None = None,
    answerer: str | None = None,
) -> Answer:
    """Answer `question` from the stored documents, or abstain; see the module docstring."""
    final = None
    for item in stream_answer(
        question, settings, store=store, history=history, filters=filters, k=k, answerer=answerer
    ):
        if isinstance(item, Answer):
            final = item
    assert final is not None  # stream_answer always ends with the Answer
    return final


def stream_answer(question: str, settings: Settings, *, store: Store, history: tuple[str, ...] = (),
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


def retrieve(asked: Question, store: Store, settings: Settings, *, k: int | None = None,
             filters: Filters | None = None) -> tuple[Question, RetrievalResult]:
    """The passages for the question; an acronym the first passages spell out is asked again spelled out."""
    retrieval = search(store, settings, asked.standalone, k=k, filters=filters)
    expanded = expand_acronyms(asked.standalone, [p.chunk.text for p in retrieval.passages])
    if expanded == asked.standalone:
        return asked, retrieval
    asked = replace(asked, standalone=expanded, terms=tuple(content_terms(expanded)))
    return asked, search(store, settings, expanded, k=k, filters=filters)


def extractive_answer(asked: Question, passages: list[Retrieved], store: Store, settings: Settings) -> Answer:
    """One to four sentences quoted verbatim from the passages, best first, each with its citation."""
    if not passages:
        return abstention(asked, passages, "nothing relevant is stored")
    every = sentence_candidates(passages, asked.kind == "list")
    if reason := before_ranking(asked, passages, every, store):
        return abstention(asked, passages, reason)
    if asked.kind == "summary" and (summary := _summary(passages, store)):
        return summary
    kept, rows = candidate_features(asked, every, store)
    model = load_model()
    probabilities = model.probability(rows, asked.cjk)
    reader = second_opinion_reader(settings) if asked.cjk and kept else None
    opinion = (second_opinion(asked.standalone, [c.text for c in kept], probabilities, reader,
                              model.second_opinion_weight) if reader else None)
    answerable = round(model.answerable_probability(rows, probabilities, opinion.cosine if opinion else None), 4)
    candidates = rank_candidates(asked, kept, rows, probabilities, opinion.lead if opinion else None)
    if reason := after_ranking(asked, candidates, every):
        return abstention(asked, passages, reason)
    threshold = model.abstain_threshold(rows) if settings.abstain_threshold is None else settings.abstain_threshold
    if answerable < threshold:
        return replace(
            abstention(
                asked,
                passages,
                f"the passages are unlikely to answer it (probability {answerable:.2f} < {threshold:.2f})",
            ),
            support=answerable,
        )
    chosen = [with_its_term(c) for c in _compose(asked, candidates)]
    return replace(cited_answer(chosen, passages), support=answerable)


def _summary(passages: list[Retrieved], store: Store) -> Answer | None:
    """A summary question gets the document's own summary: the longest sentences of its sections headed like one
    (overview, summary, key takeaways ...), or of its opening passage, quoted in document order."""
    chunks = store.document_chunks(passages[0].chunk.doc_id)
    headed = [c for c in chunks if _SUMMARY_HEADING.search(c.section)] or chunks[:1]
    own = [Retrieved(chunk, 0.0, rank) for rank, chunk in enumerate(headed, start=1)]
    sentences = [c for c in sentence_candidates(own) if word_count(c.text) >= 6
                 and not c.text.rstrip().endswith(ELLIPSIS)]
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
    source has stays as it is); a glossary term on its own line leads its definition ("Term: definition")."""
    text = without_bullet(sentence.strip())
    term, _, definition = text.partition("\n")
    if definition and is_term_line(term):
        text = term.strip() + ": " + without_bullet(definition.strip())
    ended = text.rstrip("\"'”’）)").endswith((".", "!", "?", "。", "！", "？", ":", "；") + ELLIPSIS)  # also in quotes
    return text if ended else text + "."


def _compose(asked: Question, candidates: list[Candidate]) -> list[Candidate]:
    """The best sentence first, then the one that continues its paragraph if it is likely enough, then close
    runners-up that add something (several for list questions)."""
    best = with_its_antecedent(candidates[0])
    chosen = [best]
    antecedents = len(best.units) - len(candidates[0].units)  # the sentence it points back to counts as one
    # A runner-up must come close to the best probability, not to the lead's: a lead the second opinion chose
    # from further down would otherwise let weaker runners-up in.
    top = max(c.support for c in candidates)
    bar = (LIST_KEEP if asked.kind == "list" else OTHER_KEEP) * top
    limit = MAX_SENTENCES.get(asked.kind, DEFAULT_MAX_SENTENCES)
    covered = set(tokenize(best.text))
    # At most one sentence continues the best one's paragraph: the unit right after its last.
    following = next((c for c in candidates[1:] if continues(best, c) and c.support >= CONTINUATION_KEEP * top), None)
    runners_up = [c for c in candidates[1:] if c is not following]
    for candidate in ([following] if following else []) + runners_up:
        if len(chosen) + antecedents >= limit or (candidate is not following and candidate.support < bar):
            break
        tokens = set(tokenize(candidate.text))
        if len(tokens - covered) < 3:  # adds nothing new
            continue
        if asked.kind == "numeric" and not candidate.has_number_for_noun and best.has_number_for_noun:
            continue
        chosen.append(candidate)
        covered |= tokens
    return chosen
