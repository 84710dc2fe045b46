"""The suite of yardsticks: set files, unanswerable halves, intervals, answer length, per-set gates, the curve."""

from __future__ import annotations

import json

import pytest

from rag.errors import RagError
from rag.evaluation import GoldenQuestion, parse_set_thresholds
from rag.grounding import fold
from rag.report import abstention_curve
from rag.suite import _as_unanswerable_where_absent, answer_words, bootstrap_intervals, load_suite, mean_words


def row(answerable=True, abstained=False, hit=1, facts=("100",), found=("100",), answer="100 datasets [1].",
        support=0.9):
    return {"answerable": answerable, "abstained": abstained, "hit_rank": hit if answerable else None,
            "evidence_covered": 1, "evidence_total": 1, "key_facts": list(facts) if answerable else [],
            "facts_found": list(found) if answerable else [], "token_f1": 0.5 if answerable else None,
            "citations": [], "latency_ms": 10.0, "answer": answer, "support": support}


def test_a_suite_file_names_its_sets_and_a_bad_one_says_which(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    golden = tmp_path / "golden.jsonl"
    golden.write_text("", encoding="utf-8")
    good = tmp_path / "suite.json"
    good.write_text(json.dumps([{"name": "seed", "golden": str(golden), "corpus": str(corpus), "k": 5, "half": True}]))
    [chosen] = load_suite(good)
    assert (chosen.name, chosen.k, chosen.half) == ("seed", 5, True)
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps([{"name": "seed", "golden": str(tmp_path / "nope.jsonl"), "corpus": str(corpus),
                                    "k": 5}]))
    with pytest.raises(RagError, match=r"set 'seed': its golden .*nope.jsonl does not exist"):
        load_suite(missing)
    incomplete = tmp_path / "incomplete.json"
    incomplete.write_text(json.dumps([{"name": "seed"}]))
    with pytest.raises(RagError, match="set 1: needs name, golden, corpus and k"):
        load_suite(incomplete)


def test_questions_whose_evidence_was_not_ingested_become_unanswerable():
    inside = GoldenQuestion("a", "How many?", "100", ("It builds 100 datasets.",), True, ("100",), ("numeric",))
    outside = GoldenQuestion("b", "Who?", "Ann", ("Ann wrote it.",), True, ("Ann",), ("who",))
    kept, turned = _as_unanswerable_where_absent([inside, outside], fold("Intro. It builds 100 datasets."))
    assert kept == inside
    assert (turned.answerable, turned.evidence, turned.key_facts) == (False, (), ())
    assert turned.tags == ("who", "unanswerable")


def test_answer_length_leaves_out_markers_and_abstentions():
    assert answer_words("The plan builds 100 datasets [1]. It also [2] trains agents [3].") == 9
    assert mean_words([row(answer="one two three [1]"), row(answer="not counted", abstained=True)]) == 3.0


def test_bootstrap_intervals_hold_the_metric_and_narrow_to_a_point_when_all_agree():
    mixed = [row(found=("100",)) for _ in range(30)] + [row(found=()) for _ in range(10)]
    low, high = bootstrap_intervals(mixed, samples=300)["answer_fact_recall"]
    assert low < 0.75 < high and low > 0.5 and high < 0.95
    assert bootstrap_intervals([row() for _ in range(20)], samples=50)["retrieval_hit_rate"] == [1.0, 1.0]
    assert "abstention_recall" not in bootstrap_intervals([row()], samples=10)  # no unanswerable question: n/a


def test_gates_are_written_per_set():
    assert parse_set_thresholds(["golden:retrieval_hit_rate=0.9", "xq:false_abstention_rate=0.03"], ["golden", "xq"]) \
        == {"golden": {"retrieval_hit_rate": 0.9}, "xq": {"false_abstention_rate": 0.03}}
    with pytest.raises(RagError, match="SET:METRIC=VALUE with SET one of golden"):
        parse_set_thresholds(["retrieval_hit_rate=0.9"], ["golden"])


def test_the_abstention_curve_moves_the_threshold_and_keeps_the_rules_abstentions():
    rows = [row(support=0.8), row(support=0.1),  # answerable
            row(answerable=False, support=0.05), row(answerable=False, support=0.6),
            row(answerable=False, abstained=True, support=None)]  # abstained by a rule
    curve = {threshold: (false, recall) for threshold, false, recall in abstention_curve(rows)}
    assert curve[0.0] == (0.0, pytest.approx(1 / 3))  # the rule's abstention only
    assert curve[0.06] == (0.0, pytest.approx(2 / 3))
    assert curve[0.2] == (0.5, pytest.approx(2 / 3))
    assert curve[0.9] == (1.0, 1.0)
