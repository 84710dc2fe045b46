"""Server mode against the embedded store: what sharing one store between nodes costs.

    python bench/server_nodes.py [--questions 200]

obliqa-dev's rulebooks (about 1,800 chunks, the main index only) are ingested into an embedded store and, by
node A, into a `chroma run` server on 127.0.0.1. For each it measures
  ingest      seconds and chunks/s, and a no-change re-ingest
  open        a node with an empty data dir opening the server's store: mirroring the catalog (texts and
              chunks) and building its BM25 index (the embedded store: opening its own)
  search      p50 / p95 of retrieval's `search()` over obliqa-dev's questions, on node B for the server
  writer      entering and leaving `store.writer()` (the server's lease against the lock file)
Writes bench/results/server_nodes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from chroma_server import ChromaServer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OBLIQA = ROOT.parent / "shared" / "obliqa-dev"
RESULTS = ROOT / "bench" / "results"


def percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return round(ordered[max(0, -(-len(ordered) * q // 100) - 1)], 1)


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def measure(engine: str, folder: Path, questions: list[str]) -> dict:
    from rag.embedding import embedders
    from rag.ingest import ingest
    from rag.retrieval import search
    from rag.settings import load_settings
    from rag.store import Store

    server = ChromaServer(folder / "chroma-server").start() if engine == "server" else None
    try:
        def node(name: str):
            extra = {"chroma_url": server.url, "node_name": name} if server else {}
            return load_settings(data_dir=folder / name, multilingual_model="none", **extra)

        writer_settings = node("node-a")
        writer = Store.open(writer_settings, embedders(writer_settings))
        started = time.perf_counter()
        report = ingest([OBLIQA / "corpus"], writer_settings, writer)
        ingest_s = time.perf_counter() - started
        reingest_s = timed(lambda: ingest([OBLIQA / "corpus"], writer_settings, writer))
        writer_s = [1000 * timed(lambda: _enter_and_leave(writer)) for _ in range(20)]
        reader_settings = node("node-b") if server else writer_settings
        reader_models = embedders(reader_settings)
        opened = {}
        open_s = timed(lambda: opened.setdefault("store", Store.open(reader_settings, reader_models)))
        reader = opened["store"]
        open_s += timed(reader.lexical)  # the BM25 index: built from the mirror on a new node
        search(reader, reader_settings, questions[0])  # warm
        times = [1000 * timed(lambda: search(reader, reader_settings, question)) for question in questions]
        return {"engine": engine, "chunks": reader.count_chunks(), "documents": len(reader.documents()),
                "ingest_s": round(ingest_s, 1), "chunks_per_s": round(report.chunks_written / ingest_s, 1),
                "reingest_s": round(reingest_s, 2), "open_s": round(open_s, 2),
                "search_p50_ms": percentile(times, 50), "search_p95_ms": percentile(times, 95),
                "writer_enter_leave_p50_ms": percentile(writer_s, 50), "questions": len(questions)}
    finally:
        if server:
            server.kill()


def _enter_and_leave(store) -> None:
    with store.writer():
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=200)
    args = parser.parse_args()
    from rag.evaluation import load_golden

    questions = [q.question for q in load_golden(OBLIQA / "golden.jsonl")[0]][:args.questions]
    rows = []
    with tempfile.TemporaryDirectory(prefix="rag-server-nodes-") as folder:
        os.environ.setdefault("RAG_MODELS_DIR", str(Path(folder) / "models"))
        for engine in ("embedded", "server"):
            rows.append(measure(engine, Path(folder) / engine, questions))
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "server_nodes.json").write_text(json.dumps({"command": "python bench/server_nodes.py "
                                                           f"--questions {args.questions}", "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
