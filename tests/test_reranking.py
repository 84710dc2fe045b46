"""Re-ranking an English question's fused passages by the fitted model (rag/reranker.json)."""

import json

import numpy as np
import pytest
from conftest import CORPUS, make_settings

from rag.documents import Chunk
from rag.embedding import embedders
from rag.errors import RagError
from rag.ingest import ingest
from rag.reranking import FEATURES, RERANK_DEPTH, load_reranker, passage_features, rerank
from rag.retrieval import Retrieved, search
from rag.store import Store


def retrieved(chunk_id: str, text: str, rank: int, ranks: dict, dense: float = 0.0, lexical: float = 0.0,
              language: str = "en") -> Retrieved:
    chunk = Chunk(f"{chunk_id}#1", chunk_id, text, 0, 0, len(text), language=language)
    return Retrieved(chunk, 1.0 / rank, rank, dense, lexical, ranks)


def test_features_count_the_questions_word_pairs_and_floor_a_missing_score():
    question = "When must an Authorised Person notify the Regulator?"
    passages = [
        retrieved("a", "The Regulator keeps a register of persons.", 1, {"dense": 1}, dense=0.8),
        retrieved("b", "An Authorised Person must notify the Regulator in writing.", 2, {"lexical": 1}, lexical=9.0),
        retrieved("c", "A person may notify a change.", 3, {"dense": 2, "lexical": 2}, dense=0.5, lexical=3.0),
    ]
    rows = passage_features(question, passages)
    column = {name: rows[:, n] for n, name in enumerate(FEATURES)}
    assert column["word_pairs"].tolist() == [0.0, 1.0, pytest.approx(1 / 3)]
    assert column["dense_score"].tolist() == [0.8, 0.5, 0.5]  # b is not in the dense list: below its last
    assert column["lexical_score"].tolist() == [pytest.approx(3 / 9), 1.0, pytest.approx(3 / 9)]
    assert column["dense_rank"].tolist() == [1.0, 0.0, 0.5]


def test_an_english_questions_passages_are_ordered_by_the_model_and_a_chinese_ones_by_fusion(tmp_path):
    settings = make_settings(tmp_path / "data")
    store = Store.open(settings, embedders(settings))
    ingest([CORPUS], settings, store)
    question = "What must small and medium-sized enterprises do?"
    fused = search(store, settings.model_copy(update={"rerank": False}), question, k=RERANK_DEPTH).passages
    probabilities = load_reranker().probability(passage_features(question, fused))
    expected = [fused[n].chunk.chunk_id for n in np.argsort(-probabilities, kind="stable")[:5]]
    result = search(store, settings, question, k=5)
    assert [p.chunk.chunk_id for p in result.passages] == expected
    assert [p.score for p in result.passages] == sorted((round(float(p), 6) for p in probabilities), reverse=True)[:5]
    assert [p.rank for p in result.passages] == [1, 2, 3, 4, 5] and "rerank_ms" in result.timings
    chinese = "到2027年要建设多少个高质量工业数据集？"
    by_fusion = search(store, settings.model_copy(update={"rerank": False}), chinese, k=5).passages
    assert search(store, settings, chinese, k=5).passages == by_fusion
    store.close()


def test_a_model_fitted_on_other_features_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "reranker.json"
    record = load_reranker().to_json(FEATURES)
    record["features"] = record["features"][:-1]
    path.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(RagError, match="make fit"):
        load_reranker(path)
    with pytest.raises(RagError, match=str(tmp_path / "missing.json")):
        load_reranker(tmp_path / "missing.json")


def test_a_chinese_passage_keeps_its_fused_place_for_an_english_question():
    passages = [
        retrieved("a", "A register of persons.", 1, {"dense": 1}, dense=0.3),
        retrieved("b", "奖励最高不超过500万元。", 2, {"multilingual": 1}, language="zh"),
        retrieved("c", "An Authorised Person must notify the Regulator.", 3, {"dense": 2, "lexical": 1}, 0.7, 5.0),
    ]
    found = rerank("When must an Authorised Person notify the Regulator?", passages, load_reranker())
    assert [p.chunk.doc_id for p in found] == ["c", "b", "a"]
    assert [p.rank for p in found] == [1, 2, 3] and found[0].score == found[1].score >= found[2].score
