"""The peers the suite compares against, on a small real corpus: the tutorial retriever, BM25, the plain reader."""

from __future__ import annotations

import pytest
from conftest import make_settings

from rag.evaluation import ANSWER_METRICS, GoldenQuestion, score_question
from rag.peers import BM25, READER_1, READER_2, RETRIEVAL_ONLY, TUTORIAL, Peers, model_path, peer_rows, summarise_system


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("peers")
    (corpus / "datasets.md").write_text(
        "# Data\n\nThe plan will create 100 high-quality industrial datasets by 2027. Each dataset is curated.\n",
        encoding="utf-8")
    (corpus / "robots.md").write_text(
        "# Robots\n\nHumanoid robots are tested in pilot bases. Their safety is reviewed every year.\n",
        encoding="utf-8",
    )
    built = Peers(corpus, k=1, model_path=model_path(make_settings(corpus / "unused")))
    yield built
    built.close()


def test_each_peer_answers_in_the_shape_the_scorer_reads(peers):
    answers = peers.answers("How many industrial datasets will be created?")
    assert set(answers) == {TUTORIAL, BM25, READER_1, READER_2}
    assert "100 high-quality industrial datasets" in answers[TUTORIAL]["retrieved"][0]["text"]
    assert "100 high-quality" in answers[BM25]["retrieved"][0]["text"]
    assert answers[READER_1]["answer"] == "The plan will create 100 high-quality industrial datasets by 2027."
    assert answers[READER_2]["answer"].count(".") == 2  # its two best sentences


def test_the_plain_reader_is_scored_like_the_project(peers):
    question = GoldenQuestion(
        "q",
        "How many industrial datasets will be created?",
        "100",
        ("The plan will create 100 high-quality industrial datasets by 2027.",),
        True,
        ("100",),
        (),
    )
    scored = score_question(question, peers.answers(question.question)[READER_1], 0.0)
    assert scored["facts_found"] == ["100"] and scored["hit_rank"] == 1 and scored["citations"][0]["precise"]
    without_reader = peers.answers(question.question, with_reader=False)
    assert set(without_reader) == {TUTORIAL, BM25}


def test_peer_rows_are_scored_per_question_and_a_retrieval_only_peer_has_no_answer_metrics(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "datasets.md").write_text(
        "# Data\n\nThe plan will create 100 high-quality industrial datasets by 2027.\n", encoding="utf-8"
    )
    (corpus / "robots.md").write_text("# Robots\n\nHumanoid robots are tested in pilot bases.\n", encoding="utf-8")
    answerable = GoldenQuestion("a", "How many industrial datasets will be created?", "100",
                                ("create 100 high-quality industrial datasets",), True, ("100",), ())
    unanswerable = GoldenQuestion("u", "What is the budget for drones?", "", (), False, (), ("unanswerable",))
    rows = peer_rows(corpus, [answerable, unanswerable], 1, make_settings(tmp_path / "unused"), with_reader=True)
    assert set(rows) == {TUTORIAL, BM25, READER_1, READER_2}
    assert all([r["id"] for r in found] == ["a", "u"] for found in rows.values())
    assert rows[TUTORIAL][0]["hit_rank"] == 1 and rows[TUTORIAL][0]["latency_ms"] == 0.0
    for name in RETRIEVAL_ONLY:
        summary = summarise_system(name, rows[name])
        assert summary["retrieval_hit_rate"] == 1.0 and summary["context_recall"] == 1.0
        assert all(summary[m] is None for m in ANSWER_METRICS)  # it answers nothing: n/a, not 0
    reader = summarise_system(READER_1, rows[READER_1])
    assert reader["answer_fact_recall"] == 1.0
    assert reader["abstention_recall"] == 0.0  # the reader always answers, the unanswerable question too
