"""Ingest benchmark on ../shared/obliqa-dev/corpus, every part measured in this one run.

  ours       full ingest into a fresh store, then the bare encode of exactly what each vector index embedded, by
             the same embedders in the same process and the same way (all indexes at once), then each index's
             encode alone, then a no-change re-ingest; peak RSS of that process
  tutorial   the LangChain tutorial pipeline: RecursiveCharacterTextSplitter(1000, 200),
             HuggingFaceEmbeddings with the same model, Chroma.from_documents

Each part runs in its own subprocess so its peak memory is its own. Models are loaded before the clocks start.
Writes bench/results/ingest.json and prints a table.
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

from bare_encode import groups, timed_encode, vector_counts

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "obliqa-dev" / "corpus"


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts at its
    parent's high-water mark, so a subprocess of a large parent would report the parent's peak."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def run_ours(corpus: Path, data_dir: Path, multilingual: str | None = None) -> dict:
    from rag.embedding import embedders
    from rag.ingest import ingest
    from rag.settings import load_settings
    from rag.store import Store

    settings = load_settings(data_dir=data_dir, **({"multilingual_model": multilingual} if multilingual else {}))
    models = embedders(settings)
    for model in models.values():
        model.embed_passages(["warm up"])
    store = Store.open(settings, models)
    started = time.perf_counter()
    report = ingest([corpus], settings, store)
    ingest_s = time.perf_counter() - started
    chars = sum(d.chars for d in store.documents())
    chunk_groups = groups(store)
    bare_encode_s = timed_encode(store, chunk_groups)
    encode_s = {key: timed_encode(store, chunk_groups, only=key) for key in store.indexes}
    started = time.perf_counter()
    again = ingest([corpus], settings, store)
    reingest_s = time.perf_counter() - started
    assert again.count("unchanged") == len(again.outcomes), "the second ingest should find nothing changed"
    return {
        "documents": report.count("added"),
        "chunks": report.chunks_written,
        "vectors": vector_counts(store, chunk_groups),
        "chars": chars,
        "ingest_s": ingest_s,
        "bare_encode_s": bare_encode_s,
        "encode_alone_by_model_s": encode_s,
        "reingest_s": reingest_s,
        "peak_rss_mb": peak_rss_mb(),
        "models": {key: model.name for key, model in models.items()},
        "chunk_tokens": settings.chunk_tokens,
        "chunk_overlap": settings.chunk_overlap,
    }


def run_tutorial(corpus: Path, data_dir: Path) -> dict:
    from langchain_chroma import Chroma
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from rag.encoders import bundled_model_path

    embeddings = HuggingFaceEmbeddings(model_name=str(bundled_model_path()), model_kwargs={"device": "cpu"})
    embeddings.embed_documents(["warm up"])
    started = time.perf_counter()
    docs = [Document(page_content=p.read_text(encoding="utf-8"), metadata={"source": p.name})
            for p in sorted(corpus.glob("*.txt"))]
    splits = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(docs)
    Chroma.from_documents(splits, embeddings, persist_directory=str(data_dir), collection_name="tutorial")
    seconds = time.perf_counter() - started
    return {"documents": len(docs), "chunks": len(splits), "chars": sum(len(d.page_content) for d in docs),
            "ingest_s": seconds, "embedded_chars": sum(len(s.page_content) for s in splits),
            "peak_rss_mb": peak_rss_mb()}


def part(name: str, corpus: Path) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        output = subprocess.run(
            [sys.executable, __file__, "--part", name, "--corpus", str(corpus), "--data", folder],
            capture_output=True, text=True, cwd=ROOT, env={**os.environ, "RAG_DATA_DIR": folder},
        )
        if output.returncode:
            sys.exit(f"{name} failed:\n{output.stderr[-3000:]}")
        return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--part", choices=["ours", "ours-main-only", "tutorial"])
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    if args.part:
        if args.part == "tutorial":
            result = run_tutorial(args.corpus, args.data)
        else:
            result = run_ours(args.corpus, args.data, "none" if args.part == "ours-main-only" else None)
        print(json.dumps(result))
        return
    ours, main_only, tutorial = (
        part("ours", args.corpus),
        part("ours-main-only", args.corpus),
        part("tutorial", args.corpus),
    )
    results = {
        "corpus": str(args.corpus), "machine": f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
        "ours": ours, "ours_main_model_only": main_only, "tutorial": tutorial,
        "ratio_ingest_to_bare_encode": ours["ingest_s"] / ours["bare_encode_s"],
        "ratio_reingest_to_ingest": ours["reingest_s"] / ours["ingest_s"],
        "chars_per_s_ours": ours["chars"] / ours["ingest_s"],
        "chars_per_s_tutorial": tutorial["chars"] / tutorial["ingest_s"],
    }
    results["speedup_vs_tutorial"] = results["chars_per_s_ours"] / results["chars_per_s_tutorial"]
    results["chars_per_s_ours_main_only"] = main_only["chars"] / main_only["ingest_s"]
    results["speedup_main_only_vs_tutorial"] = results["chars_per_s_ours_main_only"] / results["chars_per_s_tutorial"]
    results["multilingual_cost_share"] = 1 - main_only["ingest_s"] / ours["ingest_s"]
    out = ROOT / "bench" / "results" / "ingest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Ingest of {args.corpus.name} ({ours['chars']:,} characters)")
    for column in ("pipeline", "chunks", "seconds", "chars/s", "peak RSS MB", "note"):
        table.add_column(column, justify="right")
    table.add_row("ours", str(ours["chunks"]), f"{ours['ingest_s']:.1f}", f"{results['chars_per_s_ours']:,.0f}",
                  f"{ours['peak_rss_mb']:.0f}", f"models: {', '.join(ours['models'].values())}")
    table.add_row("ours, main model only", str(main_only["chunks"]), f"{main_only['ingest_s']:.1f}",
                  f"{results['chars_per_s_ours_main_only']:,.0f}", f"{main_only['peak_rss_mb']:.0f}",
                  f"{results['speedup_main_only_vs_tutorial']:.2f}× tutorial; multilingual index costs "
                  f"{100 * results['multilingual_cost_share']:.0f} % of the full ingest")
    table.add_row("bare encode (same sentences)", str(ours["chunks"]), f"{ours['bare_encode_s']:.1f}", "", "",
                  f"ingest / encode = {results['ratio_ingest_to_bare_encode']:.3f} (target ≤ 1.15)")
    table.add_row("re-ingest, nothing changed", "0", f"{ours['reingest_s']:.2f}", "", "",
                  f"{100 * results['ratio_reingest_to_ingest']:.2f} % of first (target < 5 %)")
    table.add_row("LangChain tutorial", str(tutorial["chunks"]), f"{tutorial['ingest_s']:.1f}",
                  f"{results['chars_per_s_tutorial']:,.0f}", f"{tutorial['peak_rss_mb']:.0f}",
                  f"ours is {results['speedup_vs_tutorial']:.2f}× its chars/s")
    Console().print(table)
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
