"""The suite of yardsticks: several golden sets scored in one run, each beside its peers, with 95 % intervals.

A suite file (JSON) lists sets: `name`, `golden`, `corpus`, `k`, and optionally `half: true`, which ingests every
other file of the corpus (sorted by name) and asks all the questions: those whose evidence lies in the files left
out become unanswerable, so abstention is measured on text nobody tuned it on. Paths are relative to the
working directory. Sets over the same corpus share one store under the store root.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from rag.errors import RagError
from rag.evaluation import GoldenQuestion, load_golden, score_question, summarise
from rag.grounding import fold
from rag.loaders import SUPPORTED_SUFFIXES
from rag.peers import RETRIEVAL_ONLY, model_path, peer_rows, summarise_system
from rag.settings import Settings

INTERVAL_METRICS = ("retrieval_hit_rate", "retrieval_mrr", "context_recall", "answer_fact_recall", "answer_token_f1",
                    "citation_precision", "abstention_recall", "false_abstention_rate")
BOOTSTRAP_SAMPLES = 1000
_WORD = re.compile(r"\w+")
_MARKER = re.compile(r"\s*\[\d+\]")


@dataclass(frozen=True)
class SuiteSet:
    name: str
    golden: Path
    corpus: Path
    k: int
    half: bool = False


def load_suite(path: Path) -> list[SuiteSet]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RagError(f"The suite file {path} cannot be read ({exc}); give a JSON list of sets") from None
    sets = []
    for number, entry in enumerate(entries if isinstance(entries, list) else [None], start=1):
        try:
            sets.append(SuiteSet(str(entry["name"]), Path(entry["golden"]), Path(entry["corpus"]), int(entry["k"]),
                                 bool(entry.get("half", False))))
        except (TypeError, KeyError, ValueError) as exc:
            raise RagError(
                f"{path}, set {number}: needs name, golden, corpus and k ({type(exc).__name__}: {exc})"
            ) from None
    for chosen in sets:
        for what, where in (("golden", chosen.golden), ("corpus", chosen.corpus)):
            if not where.exists():
                raise RagError(f"{path}, set {chosen.name!r}: its {what} {where} does not exist")
    return sets


def answer_words(text: str) -> int:
    """Words of an answer without its [n] markers (a CJK character counts as a word)."""
    return len(_WORD.findall(_MARKER.sub("", text)))


def mean_words(rows: list[dict]) -> float | None:
    answered = [answer_words(r["answer"]) for r in rows if not r["abstained"]]
    return round(sum(answered) / len(answered), 1) if answered else None


def bootstrap_intervals(rows: list[dict], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict[str, list[float]]:
    """A 95 % percentile-bootstrap interval of each metric, resampling questions with replacement."""
    rng = random.Random(seed)
    draws: dict[str, list[float]] = {m: [] for m in INTERVAL_METRICS}
    for _ in range(samples):
        summary = summarise([rows[rng.randrange(len(rows))] for _ in rows])
        for metric in INTERVAL_METRICS:
            if summary[metric] is not None:
                draws[metric].append(summary[metric])
    intervals = {}
    for metric, values in draws.items():
        if values:
            values.sort()
            intervals[metric] = [values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))]]
    return intervals


def _files(corpus: Path) -> list[Path]:
    return [p for p in sorted(corpus.rglob("*")) if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES]


def half_corpus(corpus: Path, target: Path) -> Path:
    """Every other file of `corpus`, copied into `target` (copies, not links: ingest refuses links leaving a root)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in _files(corpus)[::2]:
        shutil.copy2(path, target / path.name)
    return target


def _as_unanswerable_where_absent(questions: list[GoldenQuestion], corpus_text: str) -> list[GoldenQuestion]:
    """A question whose evidence is in none of the ingested files cannot be answered from them."""
    return [q if q.answerable and all(fold(e) in corpus_text for e in q.evidence)
            else replace(q, answerable=False, evidence=(), key_facts=(), reference_answer="",
                         tags=tuple(dict.fromkeys(q.tags + ("unanswerable",))))
            for q in questions]


def store_dir(store_root: Path, corpus: Path) -> Path:
    return store_root / hashlib.sha1(str(corpus.resolve()).encode()).hexdigest()[:12]


def run_set(chosen: SuiteSet, settings: Settings, store_root: Path, *, peers: bool,
            progress: Callable[[str], None]) -> dict:
    """Ingest the set's corpus (idempotent), answer every question, score it and its peers."""
    from rag.answer import answer
    from rag.embedding import embedders
    from rag.ingest import ingest
    from rag.store import Store

    corpus = chosen.corpus
    if chosen.half:
        corpus = half_corpus(chosen.corpus, store_root / f"{chosen.name}-corpus")
    data_dir = store_dir(store_root, corpus)
    set_settings = settings.model_copy(update={"data_dir": data_dir})
    store = Store.open(set_settings, embedders(set_settings))
    try:
        progress(f"{chosen.name}: ingesting {corpus}")
        report = ingest([corpus], set_settings, store)
        if not report.ok:
            raise RagError(
                f"{chosen.name}: {len(report.failures)} file(s) failed to ingest: {report.failures[0].message}"
            )
        texts = fold("\n".join(store.document_text(d.doc_id) or "" for d in store.documents()))
        questions, problems = load_golden(chosen.golden, None if chosen.half else [texts])
        if problems:
            raise RagError(f"{chosen.golden} has {len(problems)} problem(s), first: {problems[0]}")
        if chosen.half:
            questions = _as_unanswerable_where_absent(questions, texts)
        progress(f"{chosen.name}: asking {len(questions)} questions")
        rows = []
        for question in questions:
            started = time.perf_counter()
            result = answer(question.question, set_settings, store=store, k=chosen.k).to_dict()
            row = score_question(question, result, (time.perf_counter() - started) * 1000)
            row["support"] = result.get("support")
            rows.append(row)
    finally:
        store.close()
    systems = {"this project": rows}
    if peers:
        systems.update(_peer_rows(chosen, corpus, questions, settings, store_root, progress))
    summaries = {name: summarise_system(name, found) for name, found in systems.items()}
    return {"name": chosen.name, "golden": str(chosen.golden), "corpus": str(chosen.corpus), "k": chosen.k,
            "half": chosen.half, "questions": len(questions),
            "systems": {name: {"summary": summaries[name],
                               "intervals": {} if name in RETRIEVAL_ONLY else bootstrap_intervals(found),
                               "mean_words": None if name in RETRIEVAL_ONLY else mean_words(found)}
                        for name, found in systems.items()},
            "rows": rows}


def _peer_rows(chosen: SuiteSet, corpus: Path, questions: list[GoldenQuestion], settings: Settings,
               store_root: Path, progress: Callable[[str], None]) -> dict[str, list[dict]]:
    """The peers' scored rows, cached under the store root: they depend only on the questions, the corpus, k and
    the peers' own code, none of which a change to this project touches."""
    from rag import peers

    digest = hashlib.sha256()
    for part in [Path(peers.__file__), *_files(corpus)]:
        digest.update(part.read_bytes())
    digest.update(json.dumps([q.question for q in questions] + [q.answerable for q in questions]
                             + [chosen.k, model_path(settings)]).encode())
    cache = store_root / f"peers-{digest.hexdigest()[:16]}.json"
    if cache.exists():
        return json.loads(cache.read_text(encoding="utf-8"))
    progress(f"{chosen.name}: peers")
    systems = peer_rows(corpus, questions, chosen.k, settings, with_reader=any(q.key_facts for q in questions))
    cache.write_text(json.dumps(systems, ensure_ascii=False), encoding="utf-8")
    return systems


def run_suite(sets: list[SuiteSet], settings: Settings, store_root: Path, *, peers: bool = True,
              progress: Callable[[str], None] = lambda message: None) -> dict:
    return {"sets": [run_set(chosen, settings, store_root, peers=peers, progress=progress) for chosen in sets]}
