"""The peers the suite compares against, on a small real corpus: the tutorial retriever, BM25, the plain reader."""

from __future__ import annotations

import pytest
from conftest import make_settings

from rag.evaluation import GoldenQuestion, score_question
from rag.peers import BM25, READER_1, READER_2, TUTORIAL, Peers, model_path


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("peers")
    (corpus / "datasets.md").write_text(
        "# Data\n\nThe plan will create 100 high-quality industrial datasets by 2027. Each dataset is curated.\n",
        encoding="utf-8")
    (corpus / "robots.md").write_text(
        "# Robots\n\nHumanoid robots are tested in pilot bases. Their safety is reviewed every year.\n", encoding="utf-8")
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
    question = GoldenQuestion("q", "How many industrial datasets will be created?", "100",
                              ("The plan will create 100 high-quality industrial datasets by 2027.",), True, ("100",), ())
    scored = score_question(question, peers.answers(question.question)[READER_1], 0.0)
    assert scored["facts_found"] == ["100"] and scored["hit_rank"] == 1 and scored["citations"][0]["precise"]
    without_reader = peers.answers(question.question, with_reader=False)
    assert set(without_reader) == {TUTORIAL, BM25}
