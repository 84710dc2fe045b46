"""Fit the passage re-ranking model (rag/reranker.json) on labelled passages of the English dev sets: `make fit`.

Data: the English yardsticks of eval/suite.json (the golden set's English answerable questions at k = 5,
obliqa-dev at k = 10, xquad-dev English at k = 5), asked of the stores `rag eval --suite` builds under
--store-root (built here when missing). Each question's RERANK_DEPTH best fused passages are taken as the product
takes them with re-ranking off (`rag.answer.retrieve`, its acronym re-ask included); a passage is positive when it
covers an evidence quote by the evaluation's rule (`rag.evaluation.covers`). Folds are held out by document (the
document of a question's first covering passage), dealt as bench/fusion_fitting.py deals them. Reported, held
out, per set: hit@k and MRR@k in the fused order and in the re-ranked order, and what leaving out each feature
costs.

Usage: python bench/fit_reranker.py [--store-root data/suite] [--out rag/reranker.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fit_selection import fit  # noqa: E402
from fusion_fitting import folds_by_document, hit_and_mrr  # noqa: E402

from rag.answer import retrieve  # noqa: E402
from rag.embedding import embedders  # noqa: E402
from rag.evaluation import covers, load_golden  # noqa: E402
from rag.ingest import ingest  # noqa: E402
from rag.lexical import has_cjk  # noqa: E402
from rag.questions import analyse  # noqa: E402
from rag.reranking import FEATURES, RERANK_DEPTH, passage_features  # noqa: E402
from rag.settings import load_settings  # noqa: E402
from rag.store import Store  # noqa: E402
from rag.suite import store_dir  # noqa: E402

SHARED = ROOT.parent / "shared"
SETS = {  # name: (golden, corpus, k)
    "golden": (ROOT / "eval/golden.jsonl", ROOT / "corpus", 5),
    "obliqa-dev": (SHARED / "obliqa-dev/golden.jsonl", SHARED / "obliqa-dev/corpus", 10),
    "xquad-dev-en": (SHARED / "xquad-dev/golden-en.jsonl", SHARED / "xquad-dev/corpus", 5),
}
FOLDS = 5


def collect(name: str, golden: Path, corpus: Path, store_root: Path, settings) -> list[dict]:
    """Per answerable English question: its passages' feature rows, labels and document."""
    set_settings = settings.model_copy(update={"data_dir": store_dir(store_root, corpus), "rerank": False})
    store = Store.open(set_settings, embedders(set_settings))
    try:
        ingest([corpus], set_settings, store)
        questions, problems = load_golden(golden)
        assert not problems, problems[:3]
        found = []
        for question in questions:
            if not question.answerable or has_cjk(question.question):
                continue
            asked, retrieval = retrieve(analyse(question.question), store, set_settings, k=RERANK_DEPTH)
            passages = retrieval.passages
            labels = np.array([any(covers(p.chunk.text, e) for e in question.evidence) for p in passages], bool)
            document = next((p.chunk.doc_id for p, label in zip(passages, labels) if label), question.id)
            found.append({"set": name, "group": f"{name}:{document}",
                          "rows": passage_features(asked.standalone, passages), "labels": labels})
        return found
    finally:
        store.close()


def held_out_scores(asked: list[dict], drop: tuple[int, ...] = ()) -> list[np.ndarray]:
    """Each question's passage probabilities from the model fitted without its document's fold."""
    folds = folds_by_document([a["group"] for a in asked], FOLDS)
    scores: list[np.ndarray] = [np.zeros(0)] * len(asked)
    for part in folds:
        training = [a for a in asked if a["group"] not in part and len(a["rows"])]
        model = fit(np.concatenate([a["rows"] for a in training]), np.concatenate([a["labels"] for a in training]),
                    drop)
        for n, a in enumerate(asked):
            if a["group"] in part:
                scores[n] = model.probability(a["rows"])
    return scores


def first_rank(labels: np.ndarray, order: np.ndarray) -> int:
    hits = np.flatnonzero(labels[order])
    return int(hits[0]) + 1 if len(hits) else 0


def per_set(asked: list[dict], scores: list[np.ndarray] | None) -> dict:
    """hit@k / MRR@k per set, in the re-ranked order (`scores`) or the fused one (None)."""
    found = {}
    for name, (_, _, k) in SETS.items():
        ranks = [first_rank(a["labels"], np.argsort(-s, kind="stable") if scores is not None else
                            np.arange(len(a["labels"])))
                 for a, s in zip(asked, scores or [None] * len(asked)) if a["set"] == name]
        hit, mrr = hit_and_mrr(ranks, k)
        found[name] = {"hit": round(hit, 4), "mrr": round(mrr, 4)}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-root", type=Path, default=ROOT / "data" / "suite")
    parser.add_argument("--out", type=Path, default=ROOT / "rag" / "reranker.json")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results" / "reranker_fit.json")
    args = parser.parse_args()
    settings = load_settings()
    asked = []
    for name, (golden, corpus, _) in SETS.items():
        asked += collect(name, golden, corpus, args.store_root, settings)
        print(f"{name}: {sum(1 for a in asked if a['set'] == name)} questions", flush=True)
    results = {"fused": per_set(asked, None), "reranked_held_out": per_set(asked, held_out_scores(asked))}
    print("fused:", results["fused"], "\nre-ranked, held out:", results["reranked_held_out"], flush=True)
    results["ablation"] = {}
    for n, feature in enumerate(FEATURES):
        without = per_set(asked, held_out_scores(asked, drop=(n,)))
        results["ablation"][feature] = {name: round(without[name]["mrr"] - results["reranked_held_out"][name]["mrr"],
                                                    4) for name in SETS}
        print(f"without {feature} (MRR):", results["ablation"][feature], flush=True)
    training = [a for a in asked if len(a["rows"])]
    model = fit(np.concatenate([a["rows"] for a in training]), np.concatenate([a["labels"] for a in training]))
    record = model.to_json(FEATURES)
    record["fitted_on"] = {"questions": {name: sum(1 for a in training if a["set"] == name) for name in SETS},
                           "passages": int(sum(len(a["rows"]) for a in training)), "script": "bench/fit_reranker.py"}
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    results["weights"] = dict(zip(FEATURES, model.weights.round(4).tolist()))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} and {args.results}")


if __name__ == "__main__":
    main()
