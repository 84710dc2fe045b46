"""`rag` / `python -m rag`: parse arguments, call the library, render with rich. No behaviour lives here."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rag.errors import RagError
from rag.settings import Settings

if TYPE_CHECKING:  # the settings module loads pydantic: a command imports it when it needs it
    from rag.settings import Settings

console = Console(soft_wrap=True)  # whole lines in pipes and logs; tables still fit the width
errors = Console(stderr=True, soft_wrap=True)


def _open_store(settings: Settings, *, with_models: bool = True):
    from rag.embedding import embedders
    from rag.store import Store

    return _warned(Store.open(settings, embedders(settings) if with_models else None))


def _warned(store):
    """The store, once what its count check found wrong is shown."""
    for problem in store.problems:
        errors.print(f"[yellow]warning:[/yellow] {problem}", highlight=False)
    return store


def cmd_ingest(args, settings: Settings) -> int:
    from rag import ingest as ingest_module

    paths = args.paths or [Path("corpus")]
    report = None if args.rebuild else ingest_module.unchanged_report(paths, settings, prune=args.prune)
    if report is None:
        report = _ingest(ingest_module, paths, args, settings)
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


def _ingest(ingest_module, paths: list[Path], args, settings: Settings):
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

        return ingest_module.ingest(paths, settings, store, prune=args.prune,
                                    progress=ingest_module.Progress(on_change=show))


def cmd_docs(args, settings: Settings) -> int:
    from rag.store import catalog_listing

    documents, problems = catalog_listing(settings)
    for problem in problems:
        errors.print(f"[yellow]warning:[/yellow] {problem}", highlight=False)
    table = Table(title=f"{len(documents)} documents in {settings.chroma_url or settings.data_dir}")
    table.add_column("doc_id", no_wrap=True)  # whole, so it can be copied into `rag remove`
    for column in ("title", "language", "published", "chunks", "flags", "path"):
        table.add_column(column, overflow="fold")
    for doc in documents:
        table.add_row(doc.doc_id, doc.title, doc.language, doc.published or "-", str(doc.chunks),
                      ", ".join(doc.flags) or "-", doc.path)
    console.print(table)
    return 0


def cmd_remove(args, settings: Settings) -> int:
    from rag.ingest import remove_documents

    removed, unknown = remove_documents(args.names, _open_store(settings, with_models=False))
    for doc_id in removed:
        console.print(f"removed {doc_id}", markup=False)
    for name in unknown:
        errors.print(f"not found: {name} is neither a stored doc_id nor the path of a stored document; see `rag docs`",
                     markup=False)
    return 0 if not unknown else 1


def cmd_ask(args, settings: Settings) -> int:
    import json

    from rag.answer import answer
    from rag.documents import Filters
    from rag.embedding import embedders
    from rag.store import Store

    store = _warned(Store.open_to_ask(settings, embedders(settings)))
    store.check_doc_ids(args.doc)
    result = answer(args.question, settings, store=store, k=args.k, answerer=args.answerer,
                    filters=Filters(doc_ids=tuple(args.doc)) if args.doc else None)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=1))
        return 0
    for notice in result.notices:
        errors.print(f"[yellow]note:[/yellow] {notice}", highlight=False)
    console.print(result.text, markup=False, highlight=False)
    if result.abstained:
        table = Table(title="Related passages (not sources)")
        table.add_column("rank", justify="right")
        for column in ("title", "section", "passage"):
            table.add_column(column, overflow="fold")
        for passage in result.retrieved:
            table.add_row(str(passage.rank), passage.chunk.title, passage.chunk.section, passage.chunk.text[:300])
    else:
        table = Table(title="Sources")
        table.add_column("[n]", justify="right")
        for column in ("title", "section", "quote"):
            table.add_column(column, overflow="fold")
        for citation in result.citations:
            table.add_row(str(citation.marker), citation.title, citation.section, citation.quote)
    console.print(table)
    return 0


def cmd_eval(args, settings: Settings) -> int:
    import datetime as dt

    from rag import evaluation
    from rag.eval_run import run_eval
    from rag.report import write_reports

    if args.suite:
        return _eval_suite(args, settings)
    thresholds = evaluation.parse_thresholds(args.fail_under)
    old = evaluation.read_report(args.compare) if args.compare else None
    if args.store:
        settings = settings.model_copy(update={"data_dir": args.store})
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=errors, transient=True) as bar:
        task = bar.add_task("ingesting corpus", total=None)
        run = run_eval(
            args.golden, args.corpus, settings, k=args.k, answerer=args.answerer, peers=args.peers,
            on_ingest=lambda report: bar.update(task, description="asking"),
            progress=lambda done, total: bar.update(task, completed=done, total=total))
    folder = args.report_dir or Path("eval/reports") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    paths = write_reports(run, folder)
    table = Table(title=f"{run.summary['questions']} questions, k = {run.summary['k']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if old:
        table.add_column("before", justify="right")
        table.add_column("change", justify="right")
        for metric, new, before, delta, better in evaluation.compare(run.summary, old):
            colour = "green" if better else "red" if better is False else "white"
            table.add_row(metric, _show(new), _show(before), f"[{colour}]{_show(delta, signed=True)}[/{colour}]")
    else:
        for metric in evaluation.METRICS:
            table.add_row(metric, _show(run.summary.get(metric)))
    console.print(table)
    if run.peers:
        peers = Table(title="Retrieval, same golden file and k")
        for column in ("pipeline", "hit rate", "MRR", "context recall"):
            peers.add_column(column)
        for name, values in run.peers.items():
            peers.add_row(
                name, *(_show(values.get(m)) for m in ("retrieval_hit_rate", "retrieval_mrr", "context_recall"))
            )
        console.print(peers)
    console.print(f"reports: {paths['md']}, {paths['html']}, {paths['json']}", markup=False)
    missed = evaluation.missed_thresholds(run.summary, thresholds)
    for message in missed:
        errors.print(f"[red]FAIL[/red] {message}", highlight=False)
    return 1 if missed else 0


def _eval_suite(args, settings: Settings) -> int:
    import datetime as dt

    from rag import evaluation, suite
    from rag.report import SUITE_COLUMNS, write_suite_report

    sets = suite.load_suite(args.suite)
    thresholds = evaluation.parse_set_thresholds(args.fail_under, [s.name for s in sets])
    result = suite.run_suite(sets, settings, args.store or settings.data_dir / "suite", peers=not args.no_peers,
                             progress=lambda message: errors.print(message, markup=False, highlight=False))
    folder = args.report_dir or Path("eval/reports") / f"suite-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    paths = write_suite_report(result, folder)
    missed = []
    for chosen in result["sets"]:
        table = Table(title=f"{chosen['name']}: {chosen['questions']} questions, k = {chosen['k']}")
        table.add_column("system")
        for _, label in SUITE_COLUMNS:
            table.add_column(label, justify="right")
        table.add_column("words", justify="right")
        for name, system in chosen["systems"].items():
            table.add_row(
                name, *(_show(system["summary"].get(m)) for m, _ in SUITE_COLUMNS), _show(system["mean_words"])
            )
        console.print(table)
        own = chosen["systems"]["this project"]["summary"]
        missed += [
            f"{chosen['name']}: {m}" for m in evaluation.missed_thresholds(own, thresholds.get(chosen["name"], {}))
        ]
    console.print(f"reports: {paths['md']}, {paths['html']}, {paths['json']}", markup=False)
    for message in missed:
        errors.print(f"[red]FAIL[/red] {message}", highlight=False)
    return 1 if missed else 0


def _show(value, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:+.3f}" if signed else f"{value:.3f}"
    return f"{value:+}" if signed else str(value)


def cmd_export(args, settings: Settings) -> int:
    from rag.backup import export_store

    count = export_store(_open_store(settings, with_models=False), args.path)
    console.print(f"exported {count} documents to {args.path} (text and chunks; vectors are rebuilt on import)",
                  markup=False)
    return 0


def cmd_import(args, settings: Settings) -> int:
    from rag.backup import import_store

    report = import_store(args.path, settings, _open_store(settings), replace=args.replace, merge=args.merge)
    console.print(f"imported {len(report.imported)} documents from {args.path}", markup=False)
    if report.replaced:
        console.print(f"replaced {len(report.replaced)} stored documents: {', '.join(report.replaced)}", markup=False)
    if report.removed:
        console.print(f"removed {len(report.removed)} documents not in the export: {', '.join(report.removed)}",
                      markup=False)
    return 0


def _warmed_store(settings: Settings):
    """The store with its models loaded and every answer path run once: the first real answer loads nothing."""
    from rag.answer import answer
    from rag.embedding import embedders
    from rag.lexical import tokenize
    from rag.store import Store

    store = _warned(Store.open(settings, embedders(settings, loaded=True)))
    tokenize("预热 warm-up")
    if store.documents():
        answer("How many datasets will be built?", settings, store=store)
    return store


def cmd_serve(args, settings: Settings) -> int:
    """Warm up, then start the chat in this same process: the page's first answer then needs no model loading."""
    from streamlit.web import bootstrap

    _warmed_store(settings).close()
    flags = {"server.port": args.port, "server.address": args.address, "server.headless": True,
             "browser.gatherUsageStats": False, "server.maxUploadSize": max(1, int(settings.max_file_mb))}
    bootstrap.load_config_options(flag_options=flags)
    errors.print(f"Serving the chat at http://{args.address}:{args.port}", markup=False)
    bootstrap.run(str(Path(__file__).resolve().parents[1] / "app.py"), False, [], flags)
    return 0


def cmd_api(args, settings: Settings) -> int:
    import uvicorn

    from rag.api import create_app

    store = _warmed_store(settings)
    errors.print(f"Serving the API at http://{args.host}:{args.port}/v1", markup=False)
    try:
        uvicorn.run(create_app(settings, store, host=args.host), host=args.host, port=args.port, log_level="warning")
    finally:
        store.close()
    return 0


def cmd_feedback_export(args, settings: Settings) -> int:
    import json

    from rag.feedback import export_candidates

    candidates, skipped = export_candidates(settings.data_dir / "feedback.jsonl")
    for note in skipped:
        errors.print(f"[yellow]warning:[/yellow] {note}", highlight=False)
    lines = "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in candidates)
    if args.out:
        args.out.write_text(lines, encoding="utf-8")
        errors.print(f"{len(candidates)} golden-set candidates written to {args.out}", markup=False)
    else:
        sys.stdout.write(lines)
    return 0


def _passages(text: str) -> int:
    if not text.strip().lstrip("-").isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of passages from 1 to 100; give e.g. --k 5")
    return int(text)


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

    ask = commands.add_parser("ask", help="answer a question with citations")
    ask.add_argument("question")
    ask.add_argument("--k", type=_passages, help="passages to retrieve, 1 to 100 (default RAG_K)")
    ask.add_argument("--doc", action="append", default=[], metavar="DOC_ID", help="only these documents (repeatable)")
    ask.add_argument("--answerer", choices=["extractive", "llm"])
    ask.add_argument("--json", action="store_true", help="print the Answer as JSON")
    ask.set_defaults(run=cmd_ask)

    evaluate = commands.add_parser("eval", help="score answers against a golden Q&A set")
    evaluate.add_argument("--golden", type=Path, default=Path("eval/golden.jsonl"))
    evaluate.add_argument("--corpus", type=Path, default=Path("corpus"))
    evaluate.add_argument("--store", type=Path, help="data dir of a separate store for this corpus (with --suite: "
                          "the folder holding a store per corpus)")
    evaluate.add_argument("--k", type=int, help="passages per question (default RAG_K)")
    evaluate.add_argument("--answerer", choices=["extractive", "llm"])
    evaluate.add_argument("--report-dir", type=Path)
    evaluate.add_argument("--compare", type=Path, metavar="OLD_REPORT.json")
    evaluate.add_argument("--fail-under", action="append", default=[], metavar="METRIC=VALUE")
    evaluate.add_argument(
        "--peers", action="store_true", help="also score the LangChain tutorial pipeline and plain BM25"
    )
    evaluate.add_argument(
        "--suite",
        type=Path,
        metavar="SUITE.json",
        help="score every set of a suite file (eval/suite.json) with its peers; --fail-under SET:METRIC=VALUE",
    )
    evaluate.add_argument("--no-peers", action="store_true", help="with --suite: leave the peers out")
    evaluate.set_defaults(run=cmd_eval)

    export = commands.add_parser("export", help="back up documents and chunks (not vectors) to a file")
    export.add_argument("path", type=Path)
    export.set_defaults(run=cmd_export)

    restore = commands.add_parser("import", help="re-create the store from an export, re-embedding it")
    restore.add_argument("path", type=Path)
    into_a_full_store = restore.add_mutually_exclusive_group()
    into_a_full_store.add_argument("--replace", action="store_true", help="the store holds only the export afterwards")
    into_a_full_store.add_argument("--merge", action="store_true",
                                   help="add the export's documents, replacing stored ones of the same doc_id")
    restore.set_defaults(run=cmd_import)

    serve = commands.add_parser("serve", help="start the chat page (models loaded before the first visitor)")
    serve.add_argument("--port", type=int, default=8501)
    serve.add_argument("--address", default="localhost")
    serve.set_defaults(run=cmd_serve)

    api = commands.add_parser(
        "api", help="serve the OpenAI-compatible HTTP API (models loaded before the first request)"
    )
    api.add_argument("--host", default="127.0.0.1", help="listen address (beyond loopback, writes need RAG_API_TOKEN)")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(run=cmd_api)

    feedback = commands.add_parser("feedback", help="work with the chat's thumbs up/down")
    feedback_commands = feedback.add_subparsers(dest="feedback_command", required=True)
    export = feedback_commands.add_parser("export", help="down-voted questions as golden-set candidates (JSON Lines)")
    export.add_argument("--out", type=Path, help="write to this file instead of standard output")
    export.set_defaults(run=cmd_feedback_export)
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
