"""Fit a Chinese question's fusion on data: each retriever's weight (0 = not run) and the RRF constant.

    python bench/fit_chinese_fusion.py [--cached]   # writes bench/results/chinese_fusion_fit.json

Data: the retrievers' cached lists of bench/chinese_retrieval.py (xquad-dev Chinese and the golden Chinese
questions; --cached reuses data/bench/chinese_runs.json instead of ingesting again). Every point of GRID is scored
on hit@5 + MRR@5. Folds are held out by document: the 24 articles and the seed corpus are dealt into FOLDS folds
(largest first, each to the fold with the fewest questions); each fold is scored with the point fitted on the
others, then the defaults in rag/settings.py (RAG_ZH_*) are the point fitted on all questions. The chosen
points are scored again through `rag.retrieval.fused_passages`, which is what the product runs.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chinese_retrieval import ROOT, chinese, load_cache, scores  # noqa: E402
from fusion_fitting import best_index, chunks_of, folds_by_document  # noqa: E402

from rag.translation import GLOSSES_PER_WORD  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "chinese_fusion_fit.json"
FOLDS = 4
# The multilingual weight is 1 or 0: reciprocal rank fusion depends only on the weights' ratios.
GRID = {
    "multilingual": (0.0, 1.0),
    "translated_lexical": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0),
    "translated_dense": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0),
    "lexical": (0.0, 0.1, 0.3, 0.5),
    "dense": (0.0, 0.1, 0.3, 0.5),
}
RRF_KS = (1, 2, 5, 10, 20, 60)
GLOSSES = (1, 2, 3)  # glosses per word in the translation: the cache holds a list for each
RETRIEVERS = tuple(GRID)
CANDIDATES = 40


def run_name(retriever: str, glosses: int) -> str:
    translated = retriever.startswith("translated_")
    return f"{retriever}@{glosses}" if translated and glosses != GLOSSES_PER_WORD else retriever


def rank_tensor(records: list[dict], glosses: int) -> tuple[np.ndarray, np.ndarray]:
    """ranks[q, r, c]: rank of candidate c in retriever r's list for question q (0 = absent); covering[q, c]."""
    width = max(len({cid for run in record["runs"].values() for cid in run}) for record in records)
    ranks = np.zeros((len(records), len(RETRIEVERS), width), dtype=np.float32)
    covering = np.zeros((len(records), width), dtype=bool)
    for q, record in enumerate(records):
        column: dict[str, int] = {}
        for r, retriever in enumerate(RETRIEVERS):
            for rank, cid in enumerate(record["runs"].get(run_name(retriever, glosses), []), start=1):
                ranks[q, r, column.setdefault(cid, len(column))] = rank
        for cid in record["covering"]:
            if cid in column:
                covering[q, column[cid]] = True
    return ranks, covering


def first_covering_ranks(contributions: np.ndarray, covering: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ranks[g, q]: rank of the first covering chunk under weight vector g (a large number when none scores)."""
    questions, retrievers, width = contributions.shape
    flat = contributions.transpose(1, 0, 2).reshape(retrievers, -1)
    fused = (weights @ flat).reshape(len(weights), questions, width)
    best_covering = np.where(covering[None], fused, -1.0).max(axis=2)
    above = (fused > best_covering[..., None]).sum(axis=2)
    return np.where(best_covering > 0, above + 1, 10**6)


def objective(ranks: np.ndarray) -> np.ndarray:
    top5 = ranks <= 5
    return top5.mean(axis=-1) + np.where(top5, 1.0 / ranks, 0.0).mean(axis=-1)


def grid_ranks(records: list[dict]) -> tuple[list[tuple[dict, int, int]], np.ndarray]:
    """Every grid point and, for each, the first covering rank of every question: (points, ranks[point, q])."""
    weight_rows = np.array(list(itertools.product(*GRID.values())), dtype=np.float32)
    weight_rows = weight_rows[weight_rows.sum(axis=1) > 0]
    points, blocks = [], []
    for glosses in GLOSSES:
        ranks, covering = rank_tensor(records, glosses)
        for rrf_k in RRF_KS:
            contributions = np.where(ranks > 0, 1.0 / (rrf_k + ranks), 0.0).astype(np.float32)
            contributions = np.ascontiguousarray(contributions)
            for start in range(0, len(weight_rows), 256):
                blocks.append(first_covering_ranks(contributions, covering, weight_rows[start:start + 256]))
            points += [
                ({r: round(float(w), 3) for r, w in zip(RETRIEVERS, row)}, rrf_k, glosses) for row in weight_rows
            ]
    return points, np.concatenate(blocks)


def best_point(points, ranks: np.ndarray, selected: np.ndarray) -> int:
    """The best grid point on the selected questions; ties go to the fewest retrievers, then the smallest weights."""
    return best_index(objective(ranks[:, selected]), lambda i: (sum(w > 0 for w in points[i][0].values()),
                                                                sum(points[i][0].values()), points[i][1], points[i][2]))


def fusion_of(point):
    weights, rrf_k, glosses = point
    return chinese({run_name(r, glosses): w for r, w in weights.items() if w}, rrf_k)


def product_scores(sets: dict, point, ids: set[str] | None = None) -> dict:
    """The point's hit@5 / MRR@5 / hit@10 through rag.retrieval.fused_passages, per set, on the questions in `ids`."""
    chosen = {name: [r for r in data["questions"] if ids is None or r["id"] in ids] for name, data in sets.items()}
    return {name: scores(chosen[name], chunks_of(data["chunks"]), fusion_of(point))
            for name, data in sets.items() if chosen[name]}


def describe(point) -> dict:
    weights, rrf_k, glosses = point
    return {"weights": weights, "rrf_k": rrf_k, "glosses_per_word": glosses}


def cross_validate(sets: dict, records: list[dict], points, ranks: np.ndarray, allowed: np.ndarray) -> dict:
    """Held-out scores per fold and overall, fitting among the `allowed` grid points, and the point fitted on all."""
    groups = np.array([record["group"] for record in records])
    candidates = np.flatnonzero(allowed)
    folds = []
    held_out_ranks = np.zeros(len(records))
    for number, held_out in enumerate(folds_by_document(groups, FOLDS), start=1):
        test = np.isin(groups, list(held_out))
        chosen = candidates[best_point([points[i] for i in candidates], ranks[candidates], ~test)]
        held_out_ranks[test] = ranks[chosen, test]
        ids = {record["id"] for record, keep in zip(records, test) if keep}
        folds.append({"fold": number, "documents": sorted(held_out), "questions": int(test.sum()),
                      **describe(points[chosen]), "held_out": product_scores(sets, points[chosen], ids)})
        print(json.dumps(folds[-1], ensure_ascii=False), flush=True)
    top5 = held_out_ranks <= 5
    overall = {"hit@5": round(float(top5.mean()), 3),
               "mrr@5": round(float(np.where(top5, 1 / held_out_ranks, 0).mean()), 3),
               "hit@10": round(float((held_out_ranks <= 10).mean()), 3), "questions": len(records)}
    final = points[candidates[best_point([points[i] for i in candidates], ranks[candidates],
                                         np.ones(len(records), dtype=bool))]]
    print("held out, all folds:", overall, flush=True)
    return {"folds": folds, "held_out_overall": overall,
            "chosen_on_all": {**describe(final), "scores": product_scores(sets, final)}}


def main() -> None:
    cache = load_cache(refresh="--cached" not in sys.argv[1:])
    sets = cache["sets"]
    records = [record for data in sets.values() for record in data["questions"]]
    started = time.perf_counter()
    points, ranks = grid_ranks(records)
    print(
        f"{len(points)} grid points over {len(records)} questions in {time.perf_counter() - started:.0f} s", flush=True
    )
    every = np.ones(len(points), dtype=bool)
    result = {"date": time.strftime("%Y-%m-%d"), "objective": "hit@5 + MRR@5", "grid": GRID, "rrf_ks": RRF_KS,
              "glosses": GLOSSES, **cross_validate(sets, records, points, ranks, every)}
    print("chosen on all questions:", json.dumps(result["chosen_on_all"], ensure_ascii=False))
    # What the multilingual index buys: the same fit among the points that do not use it.
    without = np.array([point[0]["multilingual"] == 0 for point in points])
    result["without_multilingual_index"] = cross_validate(sets, records, points, ranks, without)
    print("without the multilingual index:", json.dumps(result["without_multilingual_index"]["chosen_on_all"]))
    RESULTS.write_text(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
