"""Hybrid retrieval: dense (main model), dense (multilingual model) and BM25, fused by weighted reciprocal rank.

The lexical side is weighed by language: BM25 tokens of a Chinese question say little about English passages
(only numbers and Latin words carry over), so those hits count less; the multilingual index carries the
cross-language match instead.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from rag.chunking import sentence_units
from rag.documents import Chunk
from rag.lexical import has_cjk, tokenize
from rag.store import MAIN_INDEX, MULTILINGUAL_INDEX, Filters, Store

# A Chinese question's BM25 hits in English text and the English model's view of Chinese: heard, but quietly.
CROSS_LANGUAGE_LEXICAL = 0.3
CROSS_LANGUAGE_DENSE = 0.5
# The multilingual index holds a vector per chunk, which blurs a chunk of several targets: its best chunks are
# ranked again by their best sentence, embedded here (golden Chinese questions, k = 5: hit rate 0.909 -> 1.000,
# fact recall 0.818 -> 1.000 at 10; 20 and 40 did no better and took longer).
SENTENCE_RERANK_DEPTH = 10


@dataclass(frozen=True)
class Retrieved:
    chunk: Chunk
    score: float  # fused RRF score
    rank: int  # 1-based, final order
    dense: float = 0.0  # cosine similarity from the main model (0 when it did not find this chunk)
    ranks: dict[str, int] = field(default_factory=dict)  # rank in each retriever that found it


@dataclass(frozen=True)
class RetrievalResult:
    passages: list[Retrieved]
    timings: dict[str, float]


def search(store: Store, settings, question: str, *, k: int | None = None, filters: Filters | None = None,
           lexical_weight: float | None = None, dense_weight: float | None = None,
           multilingual_weight: float | None = None) -> RetrievalResult:
    """The top `k` passages for `question`, fused across retrievers; weights default to the settings."""
    k = k or settings.k
    n = max(settings.candidates, k)
    timings: dict[str, float] = {}
    cjk_question = has_cjk(question)
    weights = {
        "dense": settings.dense_weight if dense_weight is None else dense_weight,
        "lexical": settings.lexical_weight if lexical_weight is None else lexical_weight,
        "multilingual": settings.multilingual_weight if multilingual_weight is None else multilingual_weight,
    }
    runs: dict[str, list[tuple[str, float]]] = {}

    started = time.perf_counter()
    main = store.indexes[MAIN_INDEX].embedder
    runs["dense"] = store.dense_search(MAIN_INDEX, main.embed_query(question), n, filters) if weights["dense"] else []
    timings["dense_ms"] = _ms(started)

    started = time.perf_counter()
    runs["lexical"] = store.lexical_search(tokenize(question), n, filters) if weights["lexical"] else []
    timings["lexical_ms"] = _ms(started)

    started = time.perf_counter()
    if MULTILINGUAL_INDEX in store.indexes and weights["multilingual"]:
        multilingual = store.indexes[MULTILINGUAL_INDEX].embedder
        scope = filters or Filters()
        if not cjk_question:  # an English question needs the multilingual model only for Chinese documents
            scope = Filters(scope.doc_ids, "zh", scope.published_from, scope.published_to)
        if cjk_question or store.document_count(scope):  # no Chinese document: the model need not even load
            vector = multilingual.embed_query(question)
            runs["multilingual"] = _by_best_sentence(store, vector, store.dense_search(MULTILINGUAL_INDEX, vector, n, scope))
    timings["multilingual_ms"] = _ms(started)

    started = time.perf_counter()
    chunks = store.chunks(cid for run in runs.values() for cid, _ in run)
    fused: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    for name, run in runs.items():
        for rank, (chunk_id, _) in enumerate(run, start=1):
            chunk = chunks.get(chunk_id)
            if chunk is None:
                continue
            weight = weights[name]
            if cjk_question and chunk.language != "zh" and name == "lexical":
                weight *= CROSS_LANGUAGE_LEXICAL
            if cjk_question != (chunk.language == "zh") and name == "dense":
                weight *= CROSS_LANGUAGE_DENSE
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (settings.rrf_k + rank)
            ranks.setdefault(chunk_id, {})[name] = rank
    dense_scores = dict(runs.get("dense", []))
    passages: list[Retrieved] = []
    seen_texts: set[str] = set()
    for chunk_id in sorted(fused, key=lambda cid: (-fused[cid], cid)):
        fingerprint = _fingerprint(chunks[chunk_id].text)
        if fingerprint in seen_texts:  # the same passage from a second copy of a document
            continue
        seen_texts.add(fingerprint)
        passages.append(Retrieved(chunks[chunk_id], fused[chunk_id], len(passages) + 1,
                                  dense_scores.get(chunk_id, 0.0), ranks[chunk_id]))
        if len(passages) == k:
            break
    timings["fusion_ms"] = _ms(started)
    return RetrievalResult(passages, timings)


def sentence_vectors(store: Store, index: str, chunks: dict[str, Chunk]) -> dict[str, np.ndarray]:
    """Each chunk's sentence vectors in `index`'s model, a row per sentence unit: stored in the main index,
    embedded here for the multilingual index (which holds a vector per chunk)."""
    if index == MAIN_INDEX:
        return store.unit_vectors(MAIN_INDEX, chunks)
    embedder = store.indexes[index].embedder
    return {cid: _embedded_sentences(embedder, chunk.text, chunk.section) for cid, chunk in chunks.items()}


@lru_cache(maxsize=4096)
def _embedded_sentences(embedder, text: str, section: str) -> np.ndarray:
    """A chunk's sentences, labels written in (a few chunks per question, so no saving is worth their meaning)."""
    vectors = embedder.embed_passages([u.embedding_text(text) for u in sentence_units(text, section)])
    vectors.setflags(write=False)
    return vectors


def _by_best_sentence(store: Store, vector: np.ndarray, hits: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The multilingual run's first SENTENCE_RERANK_DEPTH chunks ordered by their best sentence's similarity."""
    head, tail = hits[:SENTENCE_RERANK_DEPTH], hits[SENTENCE_RERANK_DEPTH:]
    chunks = store.chunks(cid for cid, _ in head)
    best = {cid: float((rows @ vector).max()) for cid, rows in sentence_vectors(store, MULTILINGUAL_INDEX, chunks).items()}
    return sorted(((cid, best[cid]) for cid, _ in head if cid in best), key=lambda hit: -hit[1]) + tail


def _fingerprint(text: str) -> str:
    return hashlib.sha1(re.sub(r"\W+", " ", text.lower()).strip().encode()).hexdigest()


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
