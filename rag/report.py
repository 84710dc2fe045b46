"""Evaluation reports: report.json (everything, recomputable), report.md and a self-contained report.html."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from rag.evaluation import METRICS, EvalRun


def write_reports(run: EvalRun, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "report.json", "md": folder / "report.md", "html": folder / "report.html"}
    paths["json"].write_text(json.dumps(run.to_json(), ensure_ascii=False, indent=1), encoding="utf-8")
    paths["md"].write_text(markdown(run), encoding="utf-8")
    paths["html"].write_text(html_report(run), encoding="utf-8")
    return paths


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) and value <= 1.0 else f"{value}"


def _expected(row: dict) -> str:
    return ", ".join(row["key_facts"]) or ("(abstain)" if not row["answerable"] else "")


def failures(run: EvalRun) -> list[dict]:
    """Rows worth a reader's attention: a missed fact, a retrieval miss, a wrong abstention or an answer to the
    unanswerable."""
    return [r for r in run.rows if (r["answerable"] and (r["abstained"] or r["facts_missing"] or not r["hit_rank"]))
            or (not r["answerable"] and not r["abstained"])]


def markdown(run: EvalRun) -> str:
    lines = [f"# Evaluation: {run.summary['questions']} questions, k = {run.summary['k']}", "",
             "| metric | value |", "| --- | --- |"]
    lines += [f"| {m} | {_fmt(run.summary.get(m))} |" for m in METRICS]
    lines += ["", "## By tag", "", "| tag | n | " + " | ".join(METRICS[:8]) + " |",
              "| --- | --- | " + " | ".join("---" for _ in METRICS[:8]) + " |"]
    for tag, summary in run.by_tag.items():
        lines.append(
            f"| {tag} | {summary['questions']} | " + " | ".join(_fmt(summary.get(m)) for m in METRICS[:8]) + " |"
        )
    if run.peers:
        lines += ["", "## Peers (same golden file, same k)", "", "| pipeline | hit rate | MRR | context recall |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {name} | {_fmt(p.get('retrieval_hit_rate'))} | {_fmt(p.get('retrieval_mrr'))} | "
                  f"{_fmt(p.get('context_recall'))} |" for name, p in run.peers.items()]
    lines += ["", f"## Failures ({len(failures(run))})", ""]
    for row in failures(run):
        lines += [f"### {row['id']}: {row['question']}", "",
                  f"- expected: {', '.join(row['key_facts']) or ('(abstain)' if not row['answerable'] else '-')}",
                  f"- answer: {row['answer'][:400]}", f"- first covering passage at rank: {row['hit_rank'] or 'none'}",
                  f"- missing facts: {', '.join(row['facts_missing']) or '-'}", ""]
    return "\n".join(lines) + "\n"


def _plot_png(draw) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    draw(axis)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def html_report(run: EvalRun) -> str:
    e = html.escape
    tags = list(run.by_tag)

    def per_tag(axis):
        positions = range(len(tags))
        for offset, (metric, label) in zip((-0.27, 0, 0.27), (("retrieval_hit_rate", "hit rate"),
                                                              ("answer_fact_recall", "fact recall"),
                                                              ("abstention_recall", "abstention recall"))):
            axis.bar([p + offset for p in positions], [run.by_tag[t].get(metric) or 0 for t in tags], width=0.27,
                     label=label)
        axis.set_xticks(list(positions), tags, rotation=30, ha="right")
        axis.set_ylim(0, 1.05)
        axis.legend(loc="lower right")
        axis.set_title("Metrics per tag")

    def ranks(axis):
        k = run.summary["k"]
        counts = [sum(1 for r in run.rows if r["hit_rank"] == rank) for rank in range(1, k + 1)]
        misses = sum(1 for r in run.rows if r["answerable"] and not r["hit_rank"])
        axis.bar([str(rank) for rank in range(1, k + 1)] + ["miss"], counts + [misses])
        axis.set_title("Rank of the first covering passage")

    def latency(axis):
        axis.hist([r["latency_ms"] for r in run.rows], bins=20)
        axis.set_xlabel("ms")
        axis.set_title("answer() latency")

    metric_rows = "".join(f"<tr><td>{m}</td><td>{_fmt(run.summary.get(m))}</td></tr>" for m in METRICS)
    tag_rows = "".join(
        f"<tr><td>{e(t)}</td><td>{s['questions']}</td>"
        + "".join(f"<td>{_fmt(s.get(m))}</td>" for m in METRICS[:8])
        + "</tr>"
        for t, s in run.by_tag.items()
    )
    peer_rows = "".join(
        f"<tr><td>{e(n)}</td><td>{_fmt(p.get('retrieval_hit_rate'))}</td><td>{_fmt(p.get('retrieval_mrr'))}"
        f"</td><td>{_fmt(p.get('context_recall'))}</td></tr>"
        for n, p in run.peers.items()
    )
    failure_rows = "".join(
        f"<tr><td>{e(r['id'])}</td><td>{e(r['question'])}</td><td>{e(_expected(r))}</td>"
        f"<td>{e(r['answer'][:500])}</td><td>{r['hit_rank'] or 'none'}</td>"
        f"<td>{'<br>'.join(e(p['title'][:40] + ': ' + p['text'][:160]) for p in r['retrieved'][:3])}</td></tr>"
        for r in failures(run)
    )
    header = "".join(f"<th>{m}</th>" for m in METRICS[:8])
    peers = ("<h2>Peers</h2><table><tr><th>pipeline</th><th>hit rate</th><th>MRR</th><th>context recall</th></tr>"
             + peer_rows + "</table>") if run.peers else ""
    failure_header = ("<tr><th>id</th><th>question</th><th>expected</th><th>answer</th><th>hit rank</th>"
                      "<th>retrieved (top 3)</th></tr>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Evaluation report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:13px}}th{{background:#f3f3f3}}</style>
</head><body>
<h1>Evaluation: {run.summary["questions"]} questions, k = {run.summary["k"]}</h1>
<table><tr><th>metric</th><th>value</th></tr>{metric_rows}</table>
{_plot_png(per_tag)}{_plot_png(ranks)}{_plot_png(latency)}
<h2>By tag</h2><table><tr><th>tag</th><th>n</th>{header}</tr>{tag_rows}</table>
{peers}
<h2>Failures ({len(failures(run))})</h2>
<table>{failure_header}{failure_rows}</table>
<h2>Settings</h2><pre>{e(json.dumps(run.settings, indent=1, ensure_ascii=False))}</pre></body></html>"""


SUITE_COLUMNS = (("retrieval_hit_rate", "hit"), ("retrieval_mrr", "MRR"), ("context_recall", "ctx recall"),
                 ("answer_fact_recall", "fact recall"), ("citation_precision", "cit. precision"),
                 ("abstention_recall", "abst. recall"), ("false_abstention_rate", "false abst."))


def _with_interval(system: dict, metric: str) -> str:
    value = system["summary"].get(metric)
    interval = system["intervals"].get(metric)
    if value is None:
        return "n/a"
    return f"{value:.3f} [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else f"{value:.3f}"


def suite_markdown(result: dict) -> str:
    """A table per set: every system's metrics with their 95 % bootstrap intervals, answer length, latency."""
    lines = ["# Suite of yardsticks", ""]
    for chosen in result["sets"]:
        lines += [f"## {chosen['name']}: {chosen['questions']} questions, k = {chosen['k']}"
                  + (" (half the corpus ingested)" if chosen["half"] else ""), "",
                  "| system | " + " | ".join(label for _, label in SUITE_COLUMNS) + " | words | p50 / p95 ms |",
                  "| --- | " + " | ".join("---" for _ in SUITE_COLUMNS) + " | --- | --- |"]
        for name, system in chosen["systems"].items():
            summary = system["summary"]
            latency = (f"{summary['latency_p50_ms']} / {summary['latency_p95_ms']}"
                       if name == "this project" else "-")
            lines.append(f"| {name} | " + " | ".join(_with_interval(system, m) for m, _ in SUITE_COLUMNS)
                         + f" | {system['mean_words'] if system['mean_words'] is not None else '-'} | {latency} |")
        lines.append("")
    return "\n".join(lines)


def abstention_curve(rows: list[dict]) -> list[tuple[float, float, float]]:
    """(threshold, false abstention, abstention recall) as the answerable-probability threshold moves, the rules'
    abstentions (which carry no probability) kept as they are."""
    points = []
    for threshold in [n / 100 for n in range(0, 101, 2)]:
        abstains = [r["abstained"] and r.get("support") is None
                    or (r.get("support") is not None and r["support"] < threshold) for r in rows]
        answerable = [a for a, r in zip(abstains, rows) if r["answerable"]]
        unanswerable = [a for a, r in zip(abstains, rows) if not r["answerable"]]
        if answerable and unanswerable:
            points.append((threshold, sum(answerable) / len(answerable), sum(unanswerable) / len(unanswerable)))
    return points


def _plot_curves(curves: dict[str, list[tuple[float, float, float]]], chosen: dict[str, tuple[float, float]]) -> str:
    def draw(axis):
        for name, points in curves.items():
            axis.plot([p[1] for p in points], [p[2] for p in points], marker=".", label=name)
            axis.scatter(*chosen[name], s=80, marker="o", facecolors="none", edgecolors="black")
        axis.set_xlabel("false abstention (answerable questions)")
        axis.set_ylabel("abstention recall (unanswerable)")
        axis.set_title("Abstention as the threshold moves (circle: the calibrated default)")
        axis.legend(loc="lower right", fontsize=8)
    return _plot_png(draw)


def write_suite_report(result: dict, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "suite.json", "md": folder / "suite.md", "html": folder / "suite.html"}
    paths["json"].write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    text = suite_markdown(result)
    paths["md"].write_text(text, encoding="utf-8")
    with_unanswerable = {s["name"]: s["rows"] for s in result["sets"]
                         if any(not r["answerable"] for r in s["rows"]) and any(r["answerable"] for r in s["rows"])}
    curves = {name: abstention_curve(rows) for name, rows in with_unanswerable.items()}
    chosen = {name: (result_set["systems"]["this project"]["summary"]["false_abstention_rate"],
                     result_set["systems"]["this project"]["summary"]["abstention_recall"])
              for result_set in result["sets"] for name in [result_set["name"]] if name in curves}
    plot = _plot_curves(curves, chosen) if curves else ""
    paths["html"].write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>Suite of yardsticks</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}pre{{white-space:pre-wrap}}</style></head><body>
{plot}<pre>{html.escape(text)}</pre></body></html>""", encoding="utf-8")
    return paths
