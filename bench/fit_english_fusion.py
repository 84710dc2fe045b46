"""Fit an English question's fusion on data: the BM25 weight, the multilingual weight for English passages (the
dense weight stays 1: reciprocal rank fusion depends only on the weights' ratios; 0 = not run), the RRF constant
and the candidates taken from each retriever.

    python bench/fit_english_fusion.py [--checkout DIR] [--cached]   # writes bench/results/english_fusion_fit.json

Data: the English yardsticks of eval/suite.json (the golden set's English answerable questions, obliqa-dev at
k = 10, xquad-dev English at k = 5), asked of copies of the stores `rag eval --suite eval/suite.json` built under
DIR/data/suite (DIR: the checkout the suite ran in, this one by default; run the suite there first). Every
retriever's ranked list is taken once per question and depth and cached in data/bench/english_runs.json (--cached
reuses it): dense (MiniLM sentence vectors) and BM25 as `retriever_runs` takes them, and the multilingual index
(USE) over English passages, which the product runs today for Chinese documents only. A question the first
passages spell an acronym out for is asked again spelled out, as `rag.answer.retrieve` does: the lists of every
such second question a grid point can lead to are cached too. A grid point is then scored through
`rag.retrieval.fuse` and `rag.questions.expand_acronyms` on the cached lists, by the evaluation's coverage rule
(`rag.evaluation.covers`), so the figures are those of `rag eval --suite` (checked: at the defaults the cached
lists reproduce `retrieve()` for every question). Objective: the mean over the sets of hit@k + MRR@k. Folds are
held out by document (the document holding a question's first evidence quote): each set's documents are dealt into
FOLDS folds; each fold is scored with the point fitted on the others. The fit is run twice: over every point, and
over the points without the multilingual index (what the settings alone can express today).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusion_fitting import best_index, chunks_of, first_covering_rank, folds_by_document, hit_and_mrr  # noqa: E402

from rag.answer import retrieve  # noqa: E402
from rag.embedding import embedders  # noqa: E402
from rag.evaluation import covers, load_golden  # noqa: E402
from rag.grounding import fold  # noqa: E402
from rag.questions import analyse, expand_acronyms  # noqa: E402
from rag.retrieval import Fusion, _by_best_sentence, fuse, retriever_runs  # noqa: E402
from rag.settings import load_settings  # noqa: E402
from rag.store import MULTILINGUAL_INDEX, Store  # noqa: E402
from rag.suite import load_suite, store_dir  # noqa: E402

CACHE = ROOT / "data" / "bench" / "english_runs.json"
RESULTS = ROOT / "bench" / "results" / "english_fusion_fit.json"
SETS = ("golden", "obliqa-dev", "xquad-dev-en")
FOLDS = 4
GRID = {
    "lexical": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0),
    "multilingual": (0.0, 0.25, 0.5, 1.0),
    "rrf_k": (1, 2, 5, 10, 20, 60),
    "candidates": (10, 20, 40, 60, 100),
}
# An English question's fusion before this fit (settings of commit 7093c9a): the multilingual index is not run
# for English passages.
DEFAULTS = {"lexical": 1.0, "multilingual": 0.0, "rrf_k": 5, "candidates": 40}
BOOTSTRAP_SAMPLES = 1000


def points() -> list[dict]:
    return [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]


def fusion_of(point: dict) -> Fusion:
    """The point's fusion; every passage of these sets is English, so the weights for other languages do not count."""
    weights = {"dense": 1.0, "lexical": point["lexical"], "multilingual": point["multilingual"]}
    return Fusion(weights, weights, point["rrf_k"], False)


def first_search(record: dict, chunks: dict, point: dict, k: int) -> tuple[list[str], str]:
    """The point's first passages for the question and the question `retrieve()` would ask again (itself when no
    acronym is spelled out by them)."""
    fusion = fusion_of(point)
    lists = record["lists"][record["question"]][str(point["candidates"])]
    runs = {name: [(cid, 0.0) for cid in run] for name, run in lists.items() if fusion.uses(name)}
    passages = fuse(runs, chunks, fusion.weight, fusion.rrf_k, k)
    return [p.chunk.chunk_id for p in passages], expand_acronyms(record["question"], [p.chunk.text for p in passages])


def retrieved(record: dict, chunks: dict, point: dict, k: int) -> list[str]:
    """What `rag.answer.retrieve` returns under the point, from the cached lists."""
    ids, asked = first_search(record, chunks, point, k)
    if asked == record["question"]:
        return ids
    return first_search({**record, "question": asked}, chunks, point, k)[0]


def listed_ids(record: dict) -> set[str]:
    """Every chunk id in the record's lists."""
    return {cid for by_depth in record["lists"].values() for lists in by_depth.values() for run in lists.values()
            for cid in run}


def ranked_lists(store: Store, question: str, costs: list[float]) -> dict[str, dict[str, list[str]]]:
    """Each retriever's ids at each candidate depth; the multilingual run's seconds at the defaults' depth go to
    `costs` (it runs first, so its sentence embeddings are not yet cached for this question)."""
    vector = None
    lists = {}
    for depth in sorted(GRID["candidates"], key=lambda d: d != DEFAULTS["candidates"]):
        runs, _ = retriever_runs(store, question, depth, None, {"dense", "lexical"})
        started = time.perf_counter()
        if vector is None:
            vector = store.indexes[MULTILINGUAL_INDEX].embedder.embed_query(question)
        # What retriever_runs would take if it asked the multilingual index about English documents too.
        runs["multilingual"] = _by_best_sentence(store, vector, store.dense_search(MULTILINGUAL_INDEX, vector, depth))
        if depth == DEFAULTS["candidates"]:
            costs.append(time.perf_counter() - started)
        lists[str(depth)] = {name: [cid for cid, _ in run] for name, run in runs.items()}
    return lists


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def collect_set(chosen, store_root: Path, memory: dict) -> dict:
    """Copy the suite's store for the set (opening a store may write), take the lists of every question."""
    source = store_dir(store_root, chosen.corpus)
    if not (source / "catalog.sqlite3").exists():
        raise SystemExit(f"no suite store for {chosen.name} at {source}: "
                         "run `rag eval --suite eval/suite.json` in that checkout first")
    with tempfile.TemporaryDirectory() as folder:
        shutil.copytree(source, folder, dirs_exist_ok=True)
        settings = load_settings(data_dir=Path(folder))
        store = Store.open(settings, embedders(settings))
        try:
            documents = {d.doc_id: fold(store.document_text(d.doc_id) or "") for d in store.documents()}
            questions = [q for q in load_golden(chosen.golden, list(documents.values()))[0]
                         if q.answerable and "chinese" not in q.tags]
            all_points = points()
            records, chunks, costs = [], {}, []
            for question in questions:
                asked = analyse(question.question, (), settings.max_question_chars).standalone
                if not memory:
                    retriever_runs(store, asked, 1, None, {"dense", "lexical"})  # the main model loaded
                    memory["resident_mb_before"] = round(resident_mb())
                    started = time.perf_counter()
                    store.indexes[MULTILINGUAL_INDEX].embedder.embed_query(asked)
                    memory["first_question_s"] = round(time.perf_counter() - started, 2)
                    memory["resident_mb_after"] = round(resident_mb())
                record = {"id": question.id, "question": asked, "lists": {asked: ranked_lists(store, asked, costs)},
                          "group": next(d for d, text in documents.items() if fold(question.evidence[0]) in text)}
                named = store.chunks(listed_ids(record))
                if expand_acronyms(asked, [c.text for c in named.values()]) != asked:
                    for again in {first_search(record, named, point, chosen.k)[1] for point in all_points} - {asked}:
                        record["lists"][again] = ranked_lists(store, again, [])
                        named = store.chunks(listed_ids(record))
                chunks.update({cid: asdict(chunk) for cid, chunk in named.items()})
                record["covering"] = sorted(cid for cid, chunk in named.items()
                                            if any(covers(chunk.text, quote) for quote in question.evidence))
                records.append(record)
            check_cache_reproduces_retrieve(store, settings, chosen.k, records, chunks)
        finally:
            store.close()
    print(f"{chosen.name}: {len(records)} questions, {len(chunks)} chunks named", flush=True)
    return {"k": chosen.k, "questions": records, "chunks": chunks,
            "multilingual_ms": [round(s * 1000, 2) for s in costs]}


def check_cache_reproduces_retrieve(store, settings, k: int, records: list[dict], chunks: dict) -> None:
    current = {"lexical": settings.lexical_weight, "multilingual": 0.0, "rrf_k": settings.rrf_k,
               "candidates": settings.candidates}
    for record in records:
        expected = [p.chunk.chunk_id for p in retrieve(analyse(record["question"]), store, settings, k=k)[1].passages]
        got = retrieved(record, chunks_of(chunks), current, k)
        if got != expected:
            raise SystemExit(f"the cached lists do not reproduce retrieve() for {record['id']}: {got} != {expected}")


def load_cache(checkout: Path, refresh: bool) -> dict:
    if refresh or not CACHE.exists():
        os.chdir(checkout)  # the suite's paths are relative to the checkout it ran in
        memory: dict = {}
        sets = {chosen.name: collect_set(chosen, checkout / "data" / "suite", memory)
                for chosen in load_suite(Path("eval/suite.json")) if chosen.name in SETS}
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        CACHE.write_text(json.dumps({"grid": GRID, "sets": sets, "memory": memory}))
    cache = json.loads(CACHE.read_text())
    if cache["grid"] != json.loads(json.dumps(GRID)):
        raise SystemExit(f"{CACHE} was taken for another grid: run without --cached")
    return cache


def grid_ranks(cache: dict) -> tuple[list[dict], np.ndarray, np.ndarray, dict[str, int]]:
    """(points, ranks[point, question], each question's set, each set's k)."""
    grid = points()
    columns, names, ks = [], [], {}
    for name, data in cache["sets"].items():
        chunks = chunks_of(data["chunks"])
        ks[name] = data["k"]
        for record in data["questions"]:
            columns.append([first_covering_rank(retrieved(record, chunks, point, data["k"]), record["covering"])
                            for point in grid])
            names.append(name)
    return grid, np.array(columns, dtype=np.int32).T, np.array(names), ks


def per_set(ranks: np.ndarray, sets: np.ndarray, ks: dict[str, int]) -> dict:
    """hit@k and MRR@k per set of one point's ranks."""
    found = {}
    for name, k in ks.items():
        hit, mrr = hit_and_mrr(ranks[sets == name].tolist(), k)
        found[name] = {"k": k, "hit": round(hit, 3), "mrr": round(mrr, 3), "questions": int((sets == name).sum())}
    return found


def objective(ranks: np.ndarray, sets: np.ndarray, ks: dict[str, int], selected: np.ndarray) -> np.ndarray:
    """Per point: the mean over the sets of hit@k + MRR@k on the selected questions."""
    values = []
    for name, k in ks.items():
        chosen = ranks[:, selected & (sets == name)]
        if chosen.shape[1]:
            top = (chosen > 0) & (chosen <= k)
            values.append(top.mean(axis=1) + np.where(top, 1.0 / np.maximum(chosen, 1), 0.0).mean(axis=1))
    return np.mean(values, axis=0)


def best_point(grid: list[dict], value: np.ndarray, allowed: np.ndarray) -> int:
    """Among the allowed points, the best; ties go to the fewest retrievers, the smallest weights, the fewest
    candidates, then the smallest RRF constant."""
    candidates = np.flatnonzero(allowed)

    def tie_key(i: int) -> tuple:
        point = grid[candidates[i]]
        used = [w for w in (point["lexical"], point["multilingual"]) if w]
        return len(used), sum(used), point["candidates"], point["rrf_k"]

    return int(candidates[best_index(value[candidates], tie_key)])


def paired_interval(fitted: np.ndarray, defaults: np.ndarray, k: int) -> dict:
    """95 % bootstrap intervals of fitted minus defaults in hit@k and MRR@k, questions resampled in pairs."""
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(fitted), size=(BOOTSTRAP_SAMPLES, len(fitted)))

    def metrics(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        top = (ranks > 0) & (ranks <= k)
        return top.mean(axis=-1), np.where(top, 1.0 / np.maximum(ranks, 1), 0.0).mean(axis=-1)

    (hit_f, mrr_f), (hit_d, mrr_d) = metrics(fitted[draws]), metrics(defaults[draws])
    return {metric: [round(float(np.percentile(delta, 2.5)), 3), round(float(np.percentile(delta, 97.5)), 3)]
            for metric, delta in (("hit", hit_f - hit_d), ("mrr", mrr_f - mrr_d))}


def cross_validate(cache: dict, grid: list[dict], ranks: np.ndarray, sets: np.ndarray, ks: dict[str, int],
                   allowed: np.ndarray) -> dict:
    groups = np.array([record["group"] for data in cache["sets"].values() for record in data["questions"]])
    folds: list[set[str]] = [set() for _ in range(FOLDS)]
    for name in ks:
        for number, dealt in enumerate(folds_by_document(groups[sets == name].tolist(), FOLDS)):
            folds[number] |= dealt
    defaults = grid.index(DEFAULTS)
    held_out = np.zeros(ranks.shape[1], dtype=np.int32)
    chosen_per_fold = []
    for number, documents in enumerate(folds, start=1):
        test = np.isin(groups, list(documents))
        chosen = best_point(grid, objective(ranks, sets, ks, ~test), allowed)
        held_out[test] = ranks[chosen, test]
        chosen_per_fold.append({"fold": number, "documents": sorted(documents), "questions": int(test.sum()),
                                "point": grid[chosen], "held_out": per_set(ranks[chosen, test], sets[test], ks)})
        print(json.dumps(chosen_per_fold[-1]), flush=True)
    final = best_point(grid, objective(ranks, sets, ks, np.ones(len(sets), dtype=bool)), allowed)
    return {
        "folds": chosen_per_fold,
        "fitted_on_all": grid[final],
        # The defaults are not fitted, so their held-out figures are their figures on all questions.
        "defaults": per_set(ranks[defaults], sets, ks),
        "fitted_held_out": per_set(held_out, sets, ks),
        "fitted_on_all_data": per_set(ranks[final], sets, ks),
        "held_out_minus_defaults_95": {name: paired_interval(held_out[sets == name], ranks[defaults, sets == name], k)
                                       for name, k in ks.items()},
    }


def main() -> None:
    arguments = sys.argv[1:]
    checkout = Path(arguments[arguments.index("--checkout") + 1]).resolve() if "--checkout" in arguments else ROOT
    cache = load_cache(checkout, refresh="--cached" not in arguments)
    started = time.perf_counter()
    grid, ranks, sets, ks = grid_ranks(cache)
    seconds = time.perf_counter() - started
    print(f"{len(grid)} grid points over {ranks.shape[1]} questions in {seconds:.0f} s", flush=True)
    every = np.ones(len(grid), dtype=bool)
    without = np.array([point["multilingual"] == 0 for point in grid])
    result = {
        "date": time.strftime("%Y-%m-%d"), "objective": "mean over the sets of hit@k + MRR@k", "grid": GRID,
        "defaults_point": DEFAULTS,
        "fit": cross_validate(cache, grid, ranks, sets, ks, every),
        "fit_without_multilingual_index": cross_validate(cache, grid, ranks, sets, ks, without),
        # All-data figures of the points one step from the defaults: which way each setting pulls each set.
        "one_change_from_the_defaults": {
            f"{key} {value}": per_set(ranks[grid.index({**DEFAULTS, key: value})], sets, ks)
            for key, values in GRID.items() for value in values if value != DEFAULTS[key]},
        "multilingual_for_english_cost": {
            "loading_use": cache["memory"],
            "ms_per_question": {name: {"p50": round(float(np.percentile(data["multilingual_ms"], 50)), 1),
                                       "p95": round(float(np.percentile(data["multilingual_ms"], 95)), 1),
                                       "mean": round(float(np.mean(data["multilingual_ms"])), 1)}
                                for name, data in cache["sets"].items()}},
    }
    for name in ("fit", "fit_without_multilingual_index"):
        print(name, json.dumps({key: result[name][key] for key in result[name] if key != "folds"}, indent=1))
    print(json.dumps(result["multilingual_for_english_cost"]))
    RESULTS.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
