"""Peers answered on the same golden file and k, scored by the same code as the project (`score_question`).

- the LangChain tutorial pipeline: RecursiveCharacterTextSplitter(1000, 200), HuggingFaceEmbeddings with the same
  bundled model, Chroma similarity search (its "answer" is the retrieved text, so only retrieval is scored);
- plain BM25: bm25s with its own English tokenizer over the same 1000/200 chunks (retrieval only);
- the plain reader: the tutorial's passages, then their one or two sentences closest to the question by MiniLM
  cosine, quoted as the answer (what the simplest extractive reader does).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from rag.chunking import sentence_spans
from rag.evaluation import ANSWER_METRICS, GoldenQuestion, score_question, summarise
from rag.loaders import SUPPORTED_SUFFIXES, load_document
from rag.settings import BUNDLED_MODEL, Settings

TUTORIAL = "LangChain tutorial (1000/200, MiniLM, Chroma)"
BM25 = "plain BM25 (bm25s, 1000/200)"
READER_1 = "plain reader (tutorial + best MiniLM sentence)"
READER_2 = "plain reader (tutorial + best 2 MiniLM sentences)"
RETRIEVAL_ONLY = (TUTORIAL, BM25)


def _documents(corpus: Path | list[Path]):
    from langchain_core.documents import Document

    files = corpus if isinstance(corpus, list) else [p for p in sorted(corpus.rglob("*"))
                                                      if p.suffix.lower() in SUPPORTED_SUFFIXES and p.is_file()]
    loaded = [load_document(p, root=p.parent) for p in files]
    return [Document(page_content=d.text, metadata={"source": d.doc_id, "title": d.title}) for d in loaded]


def _answer_dict(texts: list[tuple[str, str]], answer: str, citations: list[dict]) -> dict:
    """The shape of `Answer.to_dict()` that `score_question` reads; texts are (doc_id, passage) in rank order."""
    retrieved = [{"chunk_id": f"peer-{rank}", "doc_id": doc_id, "title": doc_id, "text": text, "score": 0.0,
                  "rank": rank} for rank, (doc_id, text) in enumerate(texts, start=1)]
    return {"answer": answer, "abstained": False, "retrieved": retrieved, "citations": citations, "reason": ""}


class Peers:
    """The peers built over one corpus (a folder, or a list of files); `answers(question)` asks them all."""

    def __init__(self, corpus: Path | list[Path], k: int, model_path: str):
        import bm25s
        import chromadb
        from chromadb.config import Settings as ChromaSettings
        from langchain_chroma import Chroma
        from langchain_huggingface import HuggingFaceEmbeddings
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        self.k = k
        splits = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(_documents(corpus))
        self._texts = [(s.metadata["source"], s.page_content) for s in splits]
        self._folder = tempfile.TemporaryDirectory()
        client = chromadb.PersistentClient(path=self._folder.name, settings=ChromaSettings(anonymized_telemetry=False))
        self._embeddings = HuggingFaceEmbeddings(model_name=model_path, model_kwargs={"device": "cpu"})
        self._vectors = Chroma.from_documents(splits, self._embeddings, client=client, collection_name="tutorial")
        self._bm25 = bm25s.BM25()
        self._bm25.index(bm25s.tokenize([t for _, t in self._texts], stopwords="en", show_progress=False),
                         show_progress=False)
        self._sentence_vectors: dict[str, np.ndarray] = {}

    def close(self) -> None:
        self._folder.cleanup()

    def answers(self, question: str, with_reader: bool = True) -> dict[str, dict]:
        import bm25s

        found = [(d.metadata["source"], d.page_content) for d in self._vectors.similarity_search(question, k=self.k)]
        result = {TUTORIAL: _answer_dict(found, "", [])}
        tokens = bm25s.tokenize([question], stopwords="en", show_progress=False)
        lexical: list[tuple[str, str]] = []
        if tokens.vocab:
            ids, _ = self._bm25.retrieve(tokens, k=min(self.k, len(self._texts)), show_progress=False)
            lexical = [self._texts[int(i)] for i in ids[0]]
        result[BM25] = _answer_dict(lexical, "", [])
        if with_reader:
            ranked = self._best_sentences(question, found)
            for name, count in ((READER_1, 1), (READER_2, 2)):
                chosen = ranked[:count]
                citations = [{"marker": n, "chunk_id": f"peer-{rank}", "doc_id": found[rank - 1][0], "quote": sentence}
                             for n, (rank, sentence) in enumerate(chosen, start=1)]
                result[name] = _answer_dict(found, " ".join(s for _, s in chosen), citations)
        return result

    def _best_sentences(self, question: str, passages: list[tuple[str, str]]) -> list[tuple[int, str]]:
        """(passage rank, sentence) of every sentence of the passages, closest to the question first."""
        sentences = [
            (rank, text[s:e]) for rank, (_, text) in enumerate(passages, start=1) for s, e in sentence_spans(text)
        ]
        new = list(dict.fromkeys(s for _, s in sentences if s not in self._sentence_vectors))
        if new:
            for sentence, vector in zip(new, self._embeddings.embed_documents(new)):
                self._sentence_vectors[sentence] = np.asarray(vector, dtype=np.float32)
        if not sentences:
            return []
        query = np.asarray(self._embeddings.embed_query(question), dtype=np.float32)
        scores = [float(self._sentence_vectors[s] @ query) for _, s in sentences]
        return [sentences[i] for i in np.argsort(scores)[::-1]]


def model_path(settings: Settings) -> str:
    from rag.encoders import bundled_model_path

    return str(bundled_model_path()) if settings.embed_model == BUNDLED_MODEL else settings.embed_model


def peer_rows(corpus: Path | list[Path], questions: list[GoldenQuestion], k: int, settings: Settings, *,
              with_reader: bool) -> dict[str, list[dict]]:
    """Every peer's per-question records (`score_question`'s rows, latency 0), by peer name."""
    peers = Peers(corpus, k, model_path(settings))
    rows: dict[str, list[dict]] = {}
    try:
        for question in questions:
            for name, answer in peers.answers(question.question, with_reader).items():
                rows.setdefault(name, []).append(score_question(question, answer, 0.0))
    finally:
        peers.close()
    return rows


def summarise_system(name: str, rows: list[dict]) -> dict:
    """`summarise(rows)`, the answer metrics None for a peer that only retrieves (it answers nothing to score)."""
    summary = summarise(rows)
    if name in RETRIEVAL_ONLY:
        summary.update(dict.fromkeys(ANSWER_METRICS))
    return summary
