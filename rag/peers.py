"""Peers scored on the same golden file and k: the LangChain tutorial pipeline and plain BM25.

Tutorial: RecursiveCharacterTextSplitter(1000, 200), HuggingFaceEmbeddings with the same bundled model,
Chroma similarity search. Plain BM25: bm25s with its own English tokenizer over the same 1000/200 chunks.
Only retrieval is scored (they produce passages, not answers), with the evaluation's coverage rule.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rag.evaluation import GoldenQuestion, covers
from rag.loaders import SUPPORTED_SUFFIXES, load_document


def _documents(corpus: Path):
    from langchain_core.documents import Document

    files = [p for p in sorted(corpus.rglob("*")) if p.suffix.lower() in SUPPORTED_SUFFIXES and p.is_file()]
    return [Document(page_content=load_document(p, root=corpus).text, metadata={"source": str(p)}) for p in files]


def _retrieval_metrics(questions: list[GoldenQuestion], retrieve) -> dict:
    answerable = [q for q in questions if q.answerable]
    hits, reciprocal, covered, total = 0, 0.0, 0, 0
    for question in answerable:
        texts = retrieve(question.question)
        rank = next((i for i, t in enumerate(texts, 1) if any(covers(t, e) for e in question.evidence)), None)
        hits += bool(rank)
        reciprocal += 1 / rank if rank else 0.0
        covered += sum(1 for e in question.evidence if any(covers(t, e) for t in texts))
        total += len(question.evidence)
    n = max(1, len(answerable))
    return {"retrieval_hit_rate": round(hits / n, 4), "retrieval_mrr": round(reciprocal / n, 4),
            "context_recall": round(covered / total, 4) if total else None}


def score_peers(corpus: Path, questions: list[GoldenQuestion], k: int, settings) -> dict[str, dict]:
    import bm25s
    from langchain_chroma import Chroma
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from rag.embedding import bundled_model_path
    from rag.settings import BUNDLED_MODEL

    splits = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(_documents(corpus))
    texts = [s.page_content for s in splits]
    model = str(bundled_model_path()) if settings.embed_model == BUNDLED_MODEL else settings.embed_model
    with tempfile.TemporaryDirectory() as folder:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        client = chromadb.PersistentClient(path=folder, settings=ChromaSettings(anonymized_telemetry=False))
        embeddings = HuggingFaceEmbeddings(model_name=model, model_kwargs={"device": "cpu"})
        vectors = Chroma.from_documents(splits, embeddings, client=client, collection_name="tutorial")
        tutorial = _retrieval_metrics(questions, lambda q: [d.page_content for d in vectors.similarity_search(q, k=k)])
    index = bm25s.BM25()
    index.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)

    def bm25(question: str) -> list[str]:
        tokens = bm25s.tokenize([question], stopwords="en", show_progress=False)
        if not tokens.vocab:
            return []
        found, _ = index.retrieve(tokens, k=min(k, len(texts)), show_progress=False)
        return [texts[i] for i in found[0]]

    return {"LangChain tutorial (1000/200, MiniLM, Chroma)": tutorial, "plain BM25 (bm25s, 1000/200)": _retrieval_metrics(questions, bm25)}
