"""The lexical index on hand-made entries: tokens, BM25 ranks and scores, filter masks, saving and loading."""

from __future__ import annotations

import json

import pytest

from rag.lexical import LexicalEntry, LexicalIndex, has_cjk, tokenize, word_count


def entry(chunk_id: str, text: str, doc_id: str) -> LexicalEntry:
    return LexicalEntry(chunk_id, tokenize(text), doc_id)


@pytest.fixture(scope="module")
def index():
    return LexicalIndex.build([entry("a#1", "Robots in factories build robots.", "a"),
                               entry("b#1", "Datasets for robots.", "b"),
                               entry("c#1", "Industrial datasets and standards.", "c")], generation=3)


def test_tokens_are_lower_case_stems_without_stop_words_or_thousands_separators():
    assert tokenize("The Robots are testing 1,000 datasets") == ["robot", "test", "1000", "dataset"]
    assert tokenize("what is the") == []  # stop words only
    assert tokenize("snake_case under_score") == ["snake", "case", "score"]  # "_" splits, "under" is a stop word


def test_chinese_is_cut_into_words_inside_english_text_too():
    assert tokenize("建设100个高质量工业数据集") == ["建设", "100", "高质", "质量", "高质量", "工业", "数据",
                                                    "集"]
    assert tokenize("Robots 机器人 in factories") == ["robot", "机器", "机器人", "factori"]
    assert "的" not in tokenize("工业的数据")  # a Chinese stop word


def test_word_count_and_cjk_detection():
    assert word_count("Robots 机器人 work.") == 5  # a CJK character counts as a word
    assert has_cjk("数据 in text") and not has_cjk("plain English, 2027")


def test_search_ranks_by_bm25_score_with_the_best_first(index):
    robots = index.search(tokenize("robots"), 5)
    assert [chunk_id for chunk_id, _ in robots] == ["a#1", "b#1"]  # twice in a#1, once in b#1; c#1 scores 0
    assert robots[0][1] > robots[1][1] > 0
    datasets = index.search(tokenize("datasets"), 5)
    assert [chunk_id for chunk_id, _ in datasets] == ["b#1", "c#1"]  # the shorter chunk first
    both = index.search(tokenize("robots datasets"), 5)
    assert both[0][0] == "b#1" and both[0][1] == pytest.approx(robots[1][1] + datasets[0][1])


def test_search_returns_at_most_n_and_nothing_for_unknown_or_no_tokens(index):
    assert index.search(tokenize("robots"), 1) == index.search(tokenize("robots"), 5)[:1]
    assert index.search(tokenize("drones"), 5) == []
    assert index.search([], 5) == [] and index.search(tokenize("robots"), 0) == []
    assert index.search(["drone", "robot"], 5) == index.search(["robot"], 5)  # the unknown token is dropped


def test_a_mask_keeps_only_the_chunks_of_the_given_documents(index):
    assert index.mask(["b", "c"]).tolist() == [False, True, True]
    assert index.mask([]).tolist() == [False, False, False]
    assert index.search(tokenize("robots"), 5, index.mask(["b", "c"])) == [index.search(tokenize("robots"), 5)[1]]
    assert index.search(tokenize("robots"), 5, index.mask(["c"])) == []


def test_an_empty_index_finds_nothing():
    empty = LexicalIndex.build([], generation=0)
    assert len(empty) == 0 and empty.search(["robot"], 5) == []


def test_saved_index_loads_with_the_same_results_and_the_old_generation_goes(index, tmp_path):
    older = LexicalIndex.build([entry("z#1", "Old robots.", "z")], generation=2)
    older.save(tmp_path)
    index.save(tmp_path)
    assert LexicalIndex.live_generation(tmp_path) == "gen-3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURRENT", "gen-3"]
    loaded = LexicalIndex.load(tmp_path)
    assert (loaded.generation, loaded.chunk_ids, list(loaded.doc_ids)) == (3, ["a#1", "b#1", "c#1"], ["a", "b", "c"])
    assert loaded.search(tokenize("robots"), 5) == index.search(tokenize("robots"), 5)


def test_an_index_of_another_tokenizer_or_none_at_all_does_not_load(index, tmp_path):
    assert LexicalIndex.load(tmp_path) is None and LexicalIndex.live_generation(tmp_path) is None
    index.save(tmp_path)
    meta = tmp_path / "gen-3" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "tokenizer": "0"}))
    assert LexicalIndex.load(tmp_path) is None  # its tokens would not match today's questions: rebuilt instead
