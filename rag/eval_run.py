"""One `rag eval` run: bring a store up to date with the corpus, answer the golden set, score every answer with
rag.evaluation and, when asked, the peers (rag.peers) on the same questions and k."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from rag.answer import answer
from rag.embedding import embedders
from rag.errors import RagError
from rag.evaluation import RETRIEVAL_METRICS, EvalRun, GoldenQuestion, by_tag, load_golden, score_question, summarise
from rag.ingest import IngestReport, ingest
from rag.peers import peer_rows, summarise_system
from rag.settings import Settings
from rag.store import Store

PROJECT = "project (hybrid)"


def evaluate(questions: list[GoldenQuestion], ask: Callable[[str], dict], *, k: int, recorded_settings: dict,
             progress: Callable[[int, int], None] | None = None) -> EvalRun:
    """Ask every question through `ask` (question -> Answer.to_dict()) and score the answers."""
    rows = []
    for number, question in enumerate(questions, start=1):
        started = time.perf_counter()
        result = ask(question.question)
        rows.append(score_question(question, result, (time.perf_counter() - started) * 1000))
        if progress:
            progress(number, len(questions))
    summary = {"k": k, **summarise(rows)}
    return EvalRun(summary, by_tag(rows), rows, recorded_settings)


def corpus_texts(store: Store) -> list[str]:
    return [store.document_text(d.doc_id) or "" for d in store.documents()]


def run_eval(golden: Path, corpus: Path, settings: Settings, *, k: int | None = None, answerer: str | None = None,
             peers: bool = False, progress: Callable[[int, int], None] | None = None,
             on_ingest: Callable[[IngestReport], None] | None = None) -> EvalRun:
    """Bring the store up to date with `corpus` (idempotent), check the golden file, answer and score everything;
    `k` defaults to the settings' (RAG_K)."""
    k = settings.k if k is None else k
    store = Store.open(settings, embedders(settings))
    try:
        report = ingest([corpus], settings, store)
        if on_ingest:
            on_ingest(report)
        questions, problems = load_golden(golden, corpus_texts(store))
        if problems:
            raise RagError(f"{golden} has {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))
        if not questions:
            raise RagError(f"{golden} holds no questions")
        run = evaluate(questions, lambda q: answer(q, settings, store=store, k=k, answerer=answerer).to_dict(),
                       k=k, recorded_settings=settings_record(settings, k, answerer), progress=progress)
        if peers:
            found = peer_rows(corpus, questions, k, settings, with_reader=False)
            systems = {PROJECT: run.summary, **{name: summarise_system(name, rows) for name, rows in found.items()}}
            run.peers = {name: {m: summary[m] for m in RETRIEVAL_METRICS} for name, summary in systems.items()}
        return run
    finally:
        store.close()


def settings_record(settings: Settings, k: int, answerer: str | None) -> dict:
    record = json.loads(settings.model_dump_json())
    record.update(k=k, answerer=answerer or settings.answerer)
    return record
