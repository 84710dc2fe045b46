"""Which embedding backend: speed and retrieval quality of torch, onnx and onnx-int8, side by side in one run.

    python bench/backends.py

For each RAG_EMBED_BACKEND, in its own subprocess (so its memory is its own), with the multilingual index off
so that only the main model differs: ingest obliqa-dev and time it, time the bare encode of the same
sentences, score retrieval on obliqa-dev's questions (k=10) and on eval/golden.jsonl over corpus/ (k=5),
dense alone and fused. The ONNX files are exported before the clock starts (that is a one-time cost, reported
apart). Writes bench/results/backends.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
OBLIQA = ROOT.parent / "shared" / "obliqa-dev"
BACKENDS = ("torch", "onnx", "onnx-int8")


def measure(backend: str, models_dir: Path) -> dict:
    from bare_encode import groups, timed_encode, vector_counts
    from ingest_bench import peak_rss_mb
    from retrieval_sweep import score

    from rag.embedding import main_embedder
    from rag.evaluation import load_golden
    from rag.index_layout import MAIN_INDEX
    from rag.ingest import ingest
    from rag.settings import load_settings
    from rag.store import Store

    result: dict = {"backend": backend}
    for name, corpus, golden, k in (("obliqa", OBLIQA / "corpus", OBLIQA / "golden.jsonl", 10),
                                    ("golden", ROOT / "corpus", ROOT / "eval" / "golden.jsonl", 5)):
        with tempfile.TemporaryDirectory() as folder:
            settings = load_settings(data_dir=folder, embed_backend=backend, models_dir=models_dir,
                                     multilingual_model="none")
            started = time.perf_counter()
            model = main_embedder(settings)
            result.setdefault("load_s", round(time.perf_counter() - started, 2))
            result["model"] = model.name
            store = Store.open(settings, {MAIN_INDEX: model})
            started = time.perf_counter()
            report = ingest([corpus], settings, store)
            ingest_s = time.perf_counter() - started
            questions = [q for q in load_golden(golden)[0] if q.answerable]
            row = {"chunks": report.chunks_written, "ingest_s": round(ingest_s, 1),
                   "dense": score(store, settings, questions, k, lexical_weight=0, multilingual_weight=0),
                   "fused": score(store, settings, questions, k)}
            if name == "obliqa":
                row["bare_encode_s"] = round(timed_encode(store, groups(store)), 1)
                row["sentences"] = vector_counts(store, groups(store))[MAIN_INDEX]
                row["chars"] = sum(d.chars for d in store.documents())
            result[name] = row
            store.close()
    result["peak_rss_mb"] = round(peak_rss_mb())
    return result


def export_once(backend: str, models_dir: Path) -> float:
    """Build (or find) the cached ONNX file; returns the seconds it took."""
    from rag.onnx_backend import OnnxEmbedder
    from rag.settings import BUNDLED_MODEL

    started = time.perf_counter()
    OnnxEmbedder(BUNDLED_MODEL, 16, models_dir, quantized=backend == "onnx-int8")
    return round(time.perf_counter() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=BACKENDS)
    parser.add_argument("--models", type=Path)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(measure(args.part, args.models)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        models_dir = Path(folder) / "models"
        exports = {backend: export_once(backend, models_dir) for backend in BACKENDS[1:]}
        for backend in BACKENDS:
            done = subprocess.run([sys.executable, __file__, "--part", backend, "--models", str(models_dir)],
                                  capture_output=True, text=True, cwd=ROOT, env=os.environ)
            if done.returncode:
                sys.exit(f"{backend} failed:\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["first_export_s"] = exports.get(backend, 0.0)
            rows.append(row)
    torch_row = rows[0]
    for row in rows:
        row["encode_speedup_vs_torch"] = round(torch_row["obliqa"]["bare_encode_s"] / row["obliqa"]["bare_encode_s"], 3)
        row["ingest_speedup_vs_torch"] = round(torch_row["obliqa"]["ingest_s"] / row["obliqa"]["ingest_s"], 3)
    out = ROOT / "bench" / "results" / "backends.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores",
                               "rows": rows}, indent=1))
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Embedding backends (obliqa-dev ingest; hit / MRR)")
    for column in ("backend", "ingest s", "encode s", "speed-up", "obliqa dense", "obliqa fused", "golden dense",
                   "golden fused", "peak RSS MB", "export s"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row["backend"], str(row["obliqa"]["ingest_s"]), str(row["obliqa"]["bare_encode_s"]),
                      f"{row['encode_speedup_vs_torch']:.2f}×", *(" / ".join(map(str, row[c][m]))
                      for c in ("obliqa", "golden") for m in ("dense", "fused")), str(row["peak_rss_mb"]),
                      str(row["first_export_s"]))
    Console(width=200).print(table)
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
