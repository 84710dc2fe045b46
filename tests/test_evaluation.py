"""Evaluation: the coverage rule, every metric on hand-made rows, golden-file checks, the report and the gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import CORPUS, ROOT

from rag.errors import RagError
from rag.evaluation import (
    GoldenQuestion,
    compare,
    covers,
    load_golden,
    missed_thresholds,
    parse_thresholds,
    percentile,
    score_question,
    summarise,
    token_f1,
)
from rag.loaders import load_document

GOLDEN = ROOT / "eval" / "golden.jsonl"


def corpus_texts():
    return [load_document(p, root=CORPUS).text for p in sorted(CORPUS.glob("*.md"))]


def question(
    answerable=True, evidence=("create 100 high‑quality industrial datasets",), facts=("100",), tags=("numeric",)
):
    return GoldenQuestion("q1", "How many datasets?", "100 datasets by 2027.", tuple(evidence) if answerable else (),
                          answerable, tuple(facts) if answerable else (), tuple(tags))


def answer_dict(text="The plan will create 100 high-quality industrial datasets [1].", abstained=False, chunks=None,
                citations=None):
    chunks = chunks if chunks is not None else ["By 2027 it will create 100 high‑quality industrial datasets and more."]
    retrieved = [{"chunk_id": f"c{i}", "doc_id": "d", "title": "T", "text": t, "score": 1.0, "rank": i}
                 for i, t in enumerate(chunks, start=1)]
    if citations is None:
        citations = [] if abstained else [{"marker": 1, "chunk_id": "c1", "doc_id": "d",
                                           "quote": "it will create 100 high‑quality industrial datasets"}]
    return {"answer": text, "abstained": abstained, "retrieved": retrieved, "citations": citations}


def test_coverage_rule_substring_after_folding_or_80_percent_of_words():
    chunk = "By 2027, the plan seeks to create 100 high‑quality industrial datasets — “fast”."
    assert covers(chunk, "create 100 HIGH-QUALITY   industrial datasets")
    assert covers(chunk, 'datasets - "fast"')
    assert covers(chunk, "the plan seeks to create 100 industrial datasets soon")  # 8 of 9 words
    assert not covers(chunk, "the plan seeks to build 500 typical application scenarios")


def test_metrics_on_a_hit_with_the_fact_and_a_precise_citation():
    row = score_question(question(), answer_dict(), 12.0)
    assert (row["hit_rank"], row["facts_found"], row["citations"][0]["precise"]) == (1, ["100"], True)
    summary = summarise([row])
    assert summary["retrieval_hit_rate"] == summary["retrieval_mrr"] == summary["answer_fact_recall"] == 1.0
    assert summary["citation_precision"] == 1.0 and summary["false_abstention_rate"] == 0.0
    assert summary["abstention_recall"] is None  # no unanswerable question: n/a, not 0


def test_mrr_uses_the_rank_of_the_first_covering_chunk():
    row = score_question(question(), answer_dict(chunks=["unrelated text", "other", "it will create 100 high‑quality "
                                                         "industrial datasets"]), 5)
    assert row["hit_rank"] == 3
    assert summarise([row])["retrieval_mrr"] == pytest.approx(1 / 3, abs=1e-4)


def test_empty_retrieval_and_abstention_score_zero():
    row = score_question(question(), answer_dict(text="The ingested documents do not answer this.", abstained=True,
                                                 chunks=[]), 3)
    summary = summarise([row])
    assert summary["retrieval_hit_rate"] == 0.0 and summary["retrieval_mrr"] == 0.0
    assert summary["answer_fact_recall"] == 0.0 and summary["false_abstention_rate"] == 1.0
    assert summary["citation_precision"] is None and summary["context_recall"] == 0.0


def test_abstention_metrics_on_unanswerable_questions():
    unanswerable = question(answerable=False, tags=("unanswerable",))
    abstained = score_question(unanswerable, answer_dict(text="do not answer", abstained=True), 1)
    answered = score_question(unanswerable, answer_dict(), 1)
    assert summarise([abstained, answered])["abstention_recall"] == 0.5
    assert summarise([answered])["citation_precision"] == 0.0  # a citation for the unanswerable covers no evidence
    assert summarise([abstained])["retrieval_hit_rate"] is None  # no answerable questions


def test_citation_not_verbatim_in_its_chunk_is_imprecise():
    row = score_question(question(), answer_dict(citations=[{"marker": 1, "chunk_id": "c1", "doc_id": "d",
                                                              "quote": "it will create 250 datasets"}]), 1)
    assert row["citations"][0]["precise"] is False


def test_fact_alternatives_and_token_f1():
    row = score_question(question(facts=("three to five|3-5",)), answer_dict(text="Deep use of 3–5 general models."), 1)
    assert row["facts_found"] == ["three to five|3-5"]
    assert token_f1("100 datasets by 2027", "100 datasets by 2027.") == 1.0
    assert token_f1("nothing shared", "100 datasets") == 0.0


def test_percentile_and_per_tag():
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 95) == 10
    assert percentile([5.0], 50) == 5.0


def test_thresholds_and_comparison():
    summary = {"retrieval_hit_rate": 0.9, "false_abstention_rate": 0.2, "latency_p95_ms": 100}
    thresholds = parse_thresholds(["retrieval_hit_rate=0.97", "false_abstention_rate=0.1"])
    missed = missed_thresholds(summary, thresholds)
    assert missed == ["retrieval_hit_rate = 0.9 is below the threshold 0.97",
                      "false_abstention_rate = 0.2 is above the threshold 0.1"]
    with pytest.raises(RagError, match="unknown metric 'recall'"):
        parse_thresholds(["recall=1"])
    changes = {m: (d, better) for m, _, _, d, better in compare(summary, {"summary": {"retrieval_hit_rate": 0.8,
                                                                                      "latency_p95_ms": 50}})}
    assert changes["retrieval_hit_rate"] == (0.1, True) and changes["latency_p95_ms"] == (50, False)


def test_the_project_golden_set_is_valid_and_complete():
    questions, problems = load_golden(GOLDEN, corpus_texts())
    assert problems == []
    tags = [t for q in questions for t in q.tags]
    assert len(questions) >= 60
    for tag, minimum in {"numeric": 15, "list": 10, "paraphrase": 10, "cross-doc": 5, "unanswerable": 10,
                         "chinese": 5}.items():
        assert tags.count(tag) >= minimum, tag


def test_golden_problems_are_reported_with_line_numbers(tmp_path):
    good = json.loads(GOLDEN.read_text(encoding="utf-8").splitlines()[0])
    lines = [json.dumps(good), "{broken", json.dumps({**good, "id": "x2", "answerable": "yes"}),
             json.dumps(good), json.dumps({**good, "id": "x4", "evidence": ["words that are nowhere in the corpus"]})]
    path = tmp_path / "golden.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    questions, problems = load_golden(path, corpus_texts())
    assert [q.id for q in questions] == [good["id"]]
    assert [(p.line, p.message.split(" (")[0].split(":")[0]) for p in problems] == [
        (2, "not valid JSON"), (3, "field 'answerable' must be bool, got str"),
        (4, f"duplicate id {good['id']!r}"), (5, "evidence not found in the corpus")]


def test_a_golden_file_with_a_bom_is_read(tmp_path):
    lines = GOLDEN.read_text(encoding="utf-8").splitlines()[:3]
    path = tmp_path / "golden.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8"))
    questions, problems = load_golden(path, corpus_texts())
    assert problems == [] and [q.id for q in questions] == [json.loads(line)["id"] for line in lines]


def test_eval_command_writes_reports_and_fails_under_threshold(tmp_path):
    rows = [json.loads(line) for line in GOLDEN.read_text(encoding="utf-8").splitlines()]
    small = [r for r in rows if r["id"] in ("q001", "q119")] or rows[:2]
    golden = tmp_path / "golden.jsonl"
    golden.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in small), encoding="utf-8")
    env = {**os.environ, "RAG_MULTILINGUAL_MODEL": "none"}
    command = [sys.executable, "-m", "rag", "eval", "--golden", str(golden), "--store", str(tmp_path / "store"),
               "--report-dir", str(tmp_path / "report")]
    done = subprocess.run(command + ["--fail-under", "latency_p95_ms=0.001"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "latency_p95_ms" in done.stderr and "above the threshold 0.001" in done.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["summary"]["questions"] == len(small)
    assert {q["id"] for q in report["questions"]} == {r["id"] for r in small}
    assert all("text" in r for q in report["questions"] for r in q["retrieved"])
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "Failures" in html
    again = subprocess.run(command + ["--compare", str(tmp_path / "report" / "report.json")], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0 and "before" in again.stdout


def test_percentile_is_the_nearest_rank():
    values = [float(v) for v in range(1, 21)]  # 20 values: p95 is the 19th, not the maximum
    assert percentile(values, 95) == 19.0
    assert percentile(values, 50) == 10.0
    assert percentile([3.0], 95) == 3.0


def test_eval_takes_k_from_the_settings_unless_given(tmp_path):
    first = GOLDEN.read_text(encoding="utf-8").splitlines()[0]
    golden = tmp_path / "golden.jsonl"
    golden.write_text(first, encoding="utf-8")
    env = {**os.environ, "RAG_MULTILINGUAL_MODEL": "none", "RAG_K": "3"}
    command = [sys.executable, "-m", "rag", "eval", "--golden", str(golden), "--store", str(tmp_path / "store")]
    for extra, k in (([], 3), (["--k", "7"], 7)):
        folder = tmp_path / f"report-{k}"
        done = subprocess.run(command + ["--report-dir", str(folder), *extra], cwd=ROOT, env=env, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"1 questions, k = {k}" in done.stdout
        report = json.loads((folder / "report.json").read_text())
        assert report["summary"]["k"] == report["settings"]["k"] == k
        assert len(report["questions"][0]["retrieved"]) == k
