"""`rag` / `python -m rag`: parse arguments, call the library, render with rich. No behaviour lives here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rag.errors import RagError

console = Console(stderr=False)
errors = Console(stderr=True)


def _open_store(settings, *, with_models: bool = True):
    from rag.embedding import embedders
    from rag.store import Store

    return Store.open(settings, embedders(settings) if with_models else None)


def cmd_ingest(args, settings) -> int:
    from rag import ingest as ingest_module

    if args.rebuild:
        from rag.store import Store

        Store.reset(settings)
    store = _open_store(settings)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[chunks]} chunks"), TimeElapsedColumn())
    with Progress(*columns, console=errors, transient=True) as bar:
        task = bar.add_task("ingesting", total=None, chunks=0)

        def show(state: ingest_module.Progress) -> None:
            bar.update(task, total=state.files_total, completed=state.files_done, chunks=state.chunks_done)

        report = ingest_module.ingest(args.paths or [Path("corpus")], settings, store, prune=args.prune,
                                      progress=ingest_module.Progress(on_change=show))
    for failure in report.failures:
        errors.print(f"[red]failed[/red] {failure.message}", markup=True, highlight=False)
    summary = Table(title="Ingest")
    for status in ingest_module.STATUSES:
        summary.add_column(status, justify="right")
    summary.add_column("chunks", justify="right")
    summary.add_column("seconds", justify="right")
    summary.add_row(*(str(report.count(s)) for s in ingest_module.STATUSES), str(report.chunks_written),
                    f"{report.seconds:.1f}")
    console.print(summary)
    return 0 if report.ok else 1


def cmd_docs(args, settings) -> int:
    store = _open_store(settings, with_models=False)
    table = Table(title=f"{len(store.documents())} documents in {settings.chroma_url or settings.data_dir}")
    for column in ("doc_id", "title", "language", "published", "chunks", "flags", "path"):
        table.add_column(column, overflow="fold")
    for doc in store.documents():
        table.add_row(doc.doc_id, doc.title, doc.language, doc.published or "-", str(doc.chunks),
                      ", ".join(doc.flags) or "-", doc.path)
    console.print(table)
    return 0


def cmd_remove(args, settings) -> int:
    from rag.ingest import remove_documents

    removed, unknown = remove_documents(args.names, _open_store(settings, with_models=False))
    for doc_id in removed:
        console.print(f"removed {doc_id}", markup=False)
    for name in unknown:
        errors.print(f"not found: {name} is neither a stored doc_id nor the path of a stored document; see `rag docs`",
                     markup=False)
    return 0 if not unknown else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="Cited answers from policy documents.")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="add or update documents (default: corpus/)")
    ingest.add_argument("paths", nargs="*", type=Path, help="files or folders")
    ingest.add_argument("--prune", action="store_true", help="remove documents whose file is gone from these folders")
    ingest.add_argument("--rebuild", action="store_true", help="drop the store and ingest everything again")
    ingest.set_defaults(run=cmd_ingest)

    docs = commands.add_parser("docs", help="list the stored documents")
    docs.set_defaults(run=cmd_docs)

    remove = commands.add_parser("remove", help="remove documents by doc_id or path")
    remove.add_argument("names", nargs="+")
    remove.set_defaults(run=cmd_remove)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from rag.settings import load_settings

        return args.run(args, load_settings())
    except RagError as exc:
        errors.print(f"Error: {exc}", markup=False, highlight=False)
        return 2
    except KeyboardInterrupt:
        errors.print("Interrupted; the store is consistent and the next command finishes the cleanup.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
