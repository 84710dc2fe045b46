"""Scale benchmark: what ingest, answering, memory and disk cost from about 10 k to 100 k chunks.

    python bench/scale.py [--sizes 10000,100000] [--engines embedded,server]

The corpus is obliqa-dev's five rulebooks, then copies of them under other file names (so other doc ids)
with lightly varied text: every paragraph of copy N names "copy N" and its clause numbers are shifted, so
every copy is new text to embed (answers on copies are not the point; cost is).
For each engine (the embedded store, then a `chroma run` server on 127.0.0.1) the store grows step by step
to each size; at each size it measures
  ingest      chunks/s and characters/s of the step, and its ratio to the bare encode of the same vectors
              (bench/bare_encode.py, timed on all of the step's ingest groups, or on SAMPLE_GROUPS of them
              drawn at random with a fixed seed and scaled to all of its chunks: encoding is linear)
  re-ingest   a no-change re-ingest of the whole corpus so far
  answer()    p50 / p95 / p99 of the extractive answer() over obliqa-dev's 400 questions, in a fresh query
              process with its models loaded first, and that process's peak RSS
  disk        the data dir's size (plus the server's folder for the server engine)
  recall      the HNSW graph's recall of the exact top-k sentence vectors for the same questions
and the growth factor of each from the first size to the last. Writes bench/results/scale.json and plots
bench/results/scale_latency.png and scale_memory.png.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bare_encode import groups, pooled_in_ingest, timed_encode, vector_counts
from chroma_server import ChromaServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
OBLIQA = ROOT.parent / "shared" / "obliqa-dev"
RESULTS = ROOT / "bench" / "results"
# Bare-encoded groups per step: all of a 10 k step (12 groups), a fraction of a 100 k one (about 19 s a group).
SAMPLE_GROUPS = 24


def write_copy(target: Path, number: int) -> None:
    """Copy `number` of the rulebooks: each paragraph names its copy before its closing punctuation (so it
    adds no sentence of its own and a copy costs what the original does), clause numbers move by `number`."""
    for source in sorted((OBLIQA / "corpus").glob("*.txt")):
        paragraphs = source.read_text(encoding="utf-8").split("\n\n")
        varied = [re.sub(r"([.;:!?]?)\s*$", lambda m: f" (copy {number}){m.group(1)}",
                         re.sub(r"^(\d+)\.", lambda m: f"{int(m.group(1)) + number}.", p), count=1)
                  for p in paragraphs]
        (target / f"copy{number:03d}-{source.name}").write_text("\n\n".join(varied), encoding="utf-8")


def folder_mb(*folders: Path) -> float:
    """Size of the store's files; the cached ONNX exports (RAG_DATA_DIR/models) do not grow with it."""
    return sum(f.stat().st_size for folder in folders if folder.exists() for f in folder.rglob("*")
               if f.is_file() and "models" not in f.relative_to(folder).parts[:1]) / 2**20


def chunks_per_copy(settings, store) -> int:
    from rag.chunking import chunk_document
    from rag.index_layout import MAIN_INDEX
    from rag.loaders import load_document

    fits = store.indexes[MAIN_INDEX].embedder.fits
    return sum(len(chunk_document(load_document(path), settings.chunk_tokens, settings.chunk_overlap, fits))
               for path in sorted((OBLIQA / "corpus").glob("*.txt")))


def grow(corpus: Path, settings, store, copies: int) -> dict:
    """Add copies 1..`copies` that are not there yet; time the ingest and the bare encode of what it added."""
    from rag.ingest import ingest

    for number in range(1, copies + 1):
        if not list(corpus.glob(f"copy{number:03d}-*")):
            write_copy(corpus, number)
    before = {d.doc_id for d in store.documents()}
    started = time.perf_counter()
    report = ingest([corpus], settings, store)
    seconds = time.perf_counter() - started
    added = [d for d in store.documents() if d.doc_id not in before]
    added_groups = groups(store, [d.doc_id for d in added])
    # At random, not every n-th: the corpus repeats with a period of a few groups, which a stride can follow.
    picked = sorted(random.Random(0).sample(range(len(added_groups)), min(SAMPLE_GROUPS, len(added_groups))))
    sample = [added_groups[n] for n in picked]
    # Each sampled group is encoded where the step's ingest encoded it: in this process or in encoder processes.
    in_pool = pooled_in_ingest(store, added_groups)
    pooled = [in_pool[n] for n in picked]
    bare = timed_encode(store, sample, pooled=pooled) * sum(map(len, added_groups)) / sum(map(len, sample))
    vectors = vector_counts(store, added_groups)
    chars = sum(d.chars for d in added)
    step = {
        "chunks_added": report.chunks_written,
        "vectors_added": vectors,
        "chars_added": chars,
        "ingest_s": round(seconds, 1),
        "chunks_per_s": round(report.chunks_written / seconds, 1),
        "chars_per_s": round(chars / seconds),
        "bare_encode_s_estimated": round(bare, 1),
        "bare_encoded_groups": f"{len(sample)} of {len(added_groups)}",
        "ratio_to_bare_encode": round(seconds / bare, 3),
        "models": [i.embedder.name for i in store.indexes.values()],
    }
    return step


QUERY = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from rag.answer import answer
from rag.embedding import embedders
from rag.evaluation import load_golden
from rag.settings import load_settings
from rag.store import Store
settings = load_settings()
store = Store.open(settings, embedders(settings))
questions = [q.question for q in load_golden(__import__("pathlib").Path(sys.argv[2]))[0]]
answer(questions[0], settings, store=store)  # warm: models loaded, indexes read
times = []
for question in questions:
    started = time.perf_counter()
    answer(question, settings, store=store)
    times.append(1000 * (time.perf_counter() - started))
# VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's high-water mark on Linux.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"times_ms": times, "peak_rss_mb": peak / 1024}))
"""


def query_process(env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", QUERY, str(ROOT), str(OBLIQA / "golden.jsonl")], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"query process failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    times = sorted(result["times_ms"])

    def pick(q: float) -> float:
        return round(times[min(len(times) - 1, int(q * len(times)))], 1)

    return {"questions": len(times), "p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99),
            "query_process_peak_rss_mb": round(result["peak_rss_mb"])}


def dense_recall(settings, store) -> dict:
    """How much of the exact nearest-neighbour list the HNSW graph returns: for each obliqa-dev question, the
    share of the exact top-k sentence vectors of the main index (k as many as a dense search asks for) among
    Chroma's top-k. Exact scores come from every stored vector, read page by page."""
    import numpy as np

    from rag.evaluation import load_golden
    from rag.index_layout import MAIN_INDEX, SENTENCES_PER_CHUNK

    index = store.indexes[MAIN_INDEX]
    k = SENTENCES_PER_CHUNK * settings.candidates
    questions = np.stack([index.embedder.embed_query(q.question) for q in load_golden(OBLIQA / "golden.jsonl")[0]])
    kept = np.empty((len(questions), 0), dtype=np.float32)
    for offset in range(0, index.count(), 50_000):
        page = np.asarray(index.collection.get(include=["embeddings"], limit=50_000, offset=offset)["embeddings"],
                          dtype=np.float32)
        kept = np.concatenate([kept, questions @ page.T], axis=1)
        kept = -np.partition(-kept, min(k, kept.shape[1]) - 1, axis=1)[:, :k]
    kth_best = kept.min(axis=1)
    found = index.collection.query(query_embeddings=questions, n_results=k, include=["distances"])["distances"]
    # By score, not by id: the corpus repeats sentences, and of equal vectors either one is a right answer.
    recall = [float(np.mean(1.0 - np.asarray(distances) >= kth - 1e-5)) for distances, kth in zip(found, kth_best)]
    return {
        "k": k,
        "vectors": index.count(),
        "mean": round(float(np.mean(recall)), 4),
        "min": round(float(np.min(recall)), 4),
    }


def run_engine(engine: str, sizes: list[int], folder: Path) -> list[dict]:
    from rag.embedding import embedders
    from rag.ingest import ingest
    from rag.settings import load_settings
    from rag.store import Store

    corpus = folder / "corpus"
    shutil.copytree(OBLIQA / "corpus", corpus)
    data = folder / "data"
    server = ChromaServer(folder / "chroma-server").start() if engine == "server" else None
    overrides = {"data_dir": data, **({"chroma_url": server.url} if server else {})}
    env = {**os.environ, "RAG_DATA_DIR": str(data), **({"RAG_CHROMA_URL": overrides["chroma_url"]} if server else {})}
    settings = load_settings(**overrides)
    store = Store.open(settings, embedders(settings))
    rows = []
    per_copy = chunks_per_copy(settings, store)
    try:
        for size in sizes:
            step = grow(corpus, settings, store, max(0, round(size / per_copy) - 1))
            started = time.perf_counter()
            again = ingest([corpus], settings, store)
            reingest = time.perf_counter() - started
            assert again.count("unchanged") == len(again.outcomes)
            row = {"engine": engine, "target_chunks": size, "chunks": store.count_chunks(),
                   "documents": len(store.documents()), "step": step, "reingest_s": round(reingest, 2),
                   "reingest_share_of_step": round(reingest / step["ingest_s"], 4),
                   "ingest_process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                   **query_process(env), "hnsw_recall": dense_recall(settings, store),
                   "disk_mb": round(folder_mb(data, folder / "chroma-server"), 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        store.close()
        if server:
            server.kill()
    return rows


def growth(rows: list[dict]) -> dict:
    first, last = rows[0], rows[-1]
    keys = {"chunks": lambda r: r["chunks"], "chunks_per_s": lambda r: r["step"]["chunks_per_s"],
            "p50_ms": lambda r: r["p50_ms"], "p95_ms": lambda r: r["p95_ms"], "p99_ms": lambda r: r["p99_ms"],
            "query_process_peak_rss_mb": lambda r: r["query_process_peak_rss_mb"], "disk_mb": lambda r: r["disk_mb"],
            "reingest_s": lambda r: r["reingest_s"]}
    return {key: round(get(last) / get(first), 2) for key, get in keys.items() if get(first)}


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, keys, label in (("latency", ("p50_ms", "p95_ms", "p99_ms"), "answer() latency, ms"),
                              ("memory", ("query_process_peak_rss_mb",), "query process peak RSS, MB")):
        figure, axes = plt.subplots(figsize=(6, 4))
        for engine, rows in results["engines"].items():
            for key in keys:
                axes.plot([r["chunks"] for r in rows], [r[key] for r in rows], marker="o", label=f"{engine} {key}")
        axes.set_xscale("log")
        axes.set_xlabel("chunks in the store")
        axes.set_ylabel(label)
        axes.legend(fontsize=7)
        axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(RESULTS / f"scale_{name}.png", dpi=110)
        plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--engines", default="embedded,server")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    # An engine's run replaces only its own entry: at 100 k chunks each engine takes over an hour.
    saved = RESULTS / "scale.json"
    results = json.loads(saved.read_text()) if saved.exists() else {"engines": {}, "growth": {}}
    for engine in args.engines.split(","):
        with tempfile.TemporaryDirectory() as folder:
            rows = run_engine(engine, sizes, Path(folder))
        results["engines"][engine] = rows
        results["growth"].pop(engine, None)
        if len(sizes) > 1:
            results["growth"][engine] = growth(rows)
        results[f"{engine}_run"] = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores"}
        RESULTS.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(results, indent=1))
    plot(results)
    print(json.dumps(results["growth"], indent=1))


if __name__ == "__main__":
    main()
