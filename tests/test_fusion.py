"""Rank fusion on hand-made lists: scores, weights, ties, empty lists, ids found by one retriever only."""

from __future__ import annotations

import pytest

from rag.errors import RagError
from rag.fusion import Fused, fuse


def order(fused: list[Fused]) -> list[str]:
    return [item.id for item in fused]


def test_each_rank_adds_its_weight_over_rrf_k_plus_rank():
    fused = fuse({"dense": ["x", "y"], "lexical": ["y", "z"]}, {"dense": 1.0, "lexical": 3.0}, rrf_k=0)
    assert order(fused) == ["y", "z", "x"]
    assert [item.score for item in fused] == pytest.approx([1 / 2 + 3 / 1, 3 / 2, 1 / 1])
    assert fused[0].ranks == {"dense": 2, "lexical": 1}


def test_rrf_k_flattens_the_head_of_a_list():
    runs = {"dense": ["a", "b"], "lexical": ["b", "c", "a"]}
    assert order(fuse(runs, {"dense": 1.0, "lexical": 1.0}, rrf_k=0)) == ["b", "a", "c"]  # 1/2 + 1 > 1 + 1/3 > 1/2
    sharp = fuse({"dense": ["a", "b"], "lexical": ["c"]}, {"dense": 1.0, "lexical": 1.0}, rrf_k=0)
    flat = fuse({"dense": ["a", "b"], "lexical": ["c"]}, {"dense": 1.0, "lexical": 1.0}, rrf_k=60)
    assert sharp[0].score / sharp[-1].score == pytest.approx(2.0)  # a (1/1) against b (1/2)
    assert flat[0].score / flat[-1].score == pytest.approx(62 / 61)


def test_equal_scores_are_ordered_by_id_whatever_the_input_order():
    forwards = fuse({"dense": ["b", "a"], "lexical": ["a", "b"]}, {"dense": 1.0, "lexical": 1.0}, rrf_k=5)
    backwards = fuse({"lexical": ["a", "b"], "dense": ["b", "a"]}, {"dense": 1.0, "lexical": 1.0}, rrf_k=5)
    assert forwards[0].score == forwards[1].score
    assert order(forwards) == order(backwards) == ["a", "b"]
    assert order(fuse({"dense": ["m"], "lexical": ["k"]}, {"dense": 1.0, "lexical": 1.0}, rrf_k=5)) == ["k", "m"]


def test_empty_lists_add_nothing():
    assert fuse({}, {}, rrf_k=5) == []
    assert fuse({"dense": [], "lexical": []}, {"dense": 1.0, "lexical": 1.0}, rrf_k=5) == []
    alone = fuse({"dense": ["x", "y"]}, {"dense": 1.0}, rrf_k=5)
    assert fuse({"dense": ["x", "y"], "lexical": []}, {"dense": 1.0, "lexical": 1.0}, rrf_k=5) == alone


def test_an_id_in_one_list_only_has_that_rank_and_that_list_s_share():
    fused = {item.id: item for item in fuse({"dense": ["x", "y"], "lexical": ["y"]}, {"dense": 1.0, "lexical": 0.5},
                                            rrf_k=5)}
    assert fused["x"].ranks == {"dense": 1}
    assert fused["x"].score == pytest.approx(1 / 6)
    assert fused["y"].ranks == {"dense": 2, "lexical": 1}
    assert fused["y"].score == pytest.approx(1 / 7 + 0.5 / 6)


def test_a_weight_of_zero_adds_nothing_but_keeps_the_id_last():
    fused = fuse({"dense": ["x"], "lexical": ["y", "z"]}, {"dense": 0.0, "lexical": 1.0}, rrf_k=5)
    assert order(fused) == ["y", "z", "x"]
    assert fused[-1].score == 0.0 and fused[-1].ranks == {"dense": 1}
    unnamed = fuse({"dense": ["x"], "lexical": ["y"]}, {"lexical": 1.0}, rrf_k=5)  # a list the weights do not name
    assert [(item.id, item.score) for item in unnamed] == [("y", pytest.approx(1 / 6)), ("x", 0.0)]


def test_a_weight_may_depend_on_the_item():
    def by_language(name: str, item: str) -> float:  # as retrieval weighs a list by each passage's language
        return 0.5 if item.startswith("zh-") else 1.0

    fused = fuse({"dense": ["zh-1", "en-1"]}, by_language, rrf_k=0)
    assert order(fused) == ["en-1", "zh-1"]  # 1/2 against 0.5/1: equal, so by id
    assert [item.score for item in fused] == [0.5, 0.5]
    assert order(fuse({"dense": ["zh-1", "en-1", "en-2"]}, by_language, rrf_k=5)) == ["en-1", "en-2", "zh-1"]


def test_a_negative_rrf_k_is_refused_with_its_value():
    with pytest.raises(RagError, match=r"rrf_k=-1: .* must be 0 or more"):
        fuse({"dense": ["x"]}, {"dense": 1.0}, rrf_k=-1)
