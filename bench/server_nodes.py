"""Server mode against the embedded store: what sharing one store between nodes costs.

    python bench/server_nodes.py [--questions 200]

obliqa-dev's rulebooks (about 1,800 chunks, the main index only) are ingested into an embedded store and, by
node A, into a `chroma run` server on 127.0.0.1. For each it measures
  ingest      seconds and chunks/s, and a no-change re-ingest
  open        a node with an empty data dir opening the server's store: mirroring the catalog (texts and
              chunks) and building its BM25 index (the embedded store: opening its own)
  search      p50 / p95 of retrieval's `search()` over obliqa-dev's questions, on node B for the server
  writer      entering and leaving `store.writer()` (the server's lease against the lock file)
  during      server only: 4 threads searching on node B while a `rag ingest` process on node A replaces two
              of the rulebooks: p50 / p95, errors, and results holding two versions of a document. (The same on
              the embedded store, threads reading while another process ingests, crashes chromadb at 728c8c8
              too: a segfault in Collection.count while another thread opens a fresh view of the files.)
Writes bench/results/server_nodes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
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

        corpus = folder / "corpus"
        shutil.copytree(OBLIQA / "corpus", corpus)
        writer_settings = node("node-a")
        writer = Store.open(writer_settings, embedders(writer_settings))
        started = time.perf_counter()
        report = ingest([corpus], writer_settings, writer)
        ingest_s = time.perf_counter() - started
        reingest_s = timed(lambda: ingest([corpus], writer_settings, writer))
        writer_s = [1000 * timed(lambda: _enter_and_leave(writer)) for _ in range(20)]
        reader_settings = node("node-b") if server else writer_settings
        reader_models = embedders(reader_settings)
        opened = {}
        open_s = timed(lambda: opened.setdefault("store", Store.open(reader_settings, reader_models)))
        reader = opened["store"]
        open_s += timed(reader.lexical)  # the BM25 index: built from the mirror on a new node
        search(reader, reader_settings, questions[0])  # warm
        times = [1000 * timed(lambda: search(reader, reader_settings, question)) for question in questions]
        during = search_during_ingest(reader, reader_settings, questions, corpus, writer_settings) if server else {}
        return {**during, "engine": engine, "chunks": reader.count_chunks(), "documents": len(reader.documents()),
                "ingest_s": round(ingest_s, 1), "chunks_per_s": round(report.chunks_written / ingest_s, 1),
                "reingest_s": round(reingest_s, 2), "open_s": round(open_s, 2),
                "search_p50_ms": percentile(times, 50), "search_p95_ms": percentile(times, 95),
                "writer_enter_leave_p50_ms": percentile(writer_s, 50), "questions": len(questions)}
    finally:
        if server:
            server.kill()


def search_during_ingest(store, settings, questions: list[str], corpus: Path, writer_settings) -> dict:
    from rag.retrieval import search

    for path in sorted(corpus.glob("*.txt"))[:2]:
        path.write_text(path.read_text(encoding="utf-8").replace("\n\n", " (amended)\n\n"), encoding="utf-8")
    env = {**os.environ, "RAG_DATA_DIR": str(writer_settings.data_dir), "RAG_MULTILINGUAL_MODEL": "none",
           **({"RAG_CHROMA_URL": writer_settings.chroma_url, "RAG_NODE_NAME": writer_settings.node_name}
              if writer_settings.chroma_url else {})}
    ingesting = subprocess.Popen([sys.executable, "-m", "rag", "ingest", str(corpus)], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    times, errors, mixed = [], [], [0]

    def ask(offset: int) -> None:
        number = offset
        while ingesting.poll() is None:
            question = questions[number % len(questions)]
            number += 4
            try:
                started = time.perf_counter()
                passages = search(store, settings, question).passages
                times.append(1000 * (time.perf_counter() - started))
                versions = {}
                for passage in passages:
                    versions.setdefault(passage.chunk.doc_id, set()).add(passage.chunk.doc_sha256)
                mixed[0] += any(len(v) > 1 for v in versions.values())
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if ingesting.wait():
        sys.exit(f"the ingest during the searches failed: {ingesting.stderr.read()[-2000:]}")
    return {"during_ingest_searches": len(times), "during_ingest_p50_ms": percentile(times, 50),
            "during_ingest_p95_ms": percentile(times, 95), "during_ingest_errors": len(errors),
            "during_ingest_first_error": errors[0] if errors else "", "during_ingest_mixed_versions": mixed[0]}


def _enter_and_leave(store) -> None:
    with store.writer():
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--engines", default="embedded,server")
    args = parser.parse_args()
    from rag.evaluation import load_golden

    questions = [q.question for q in load_golden(OBLIQA / "golden.jsonl")[0]][:args.questions]
    rows = []
    with tempfile.TemporaryDirectory(prefix="rag-server-nodes-") as folder:
        os.environ.setdefault("RAG_MODELS_DIR", str(Path(folder) / "models"))
        for engine in args.engines.split(","):
            rows.append(measure(engine, Path(folder) / engine, questions))
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "server_nodes.json").write_text(
        json.dumps(
            {
                "command": f"python bench/server_nodes.py --questions {args.questions} --engines {args.engines}",
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
