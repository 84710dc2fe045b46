"""Hybrid retrieval: dense (main model), dense (multilingual model) and BM25, fused by weighted reciprocal rank.

Each list is weighed by the passage's language against the question's. A Chinese question reaches English
passages through the multilingual index and through its dictionary translation (rag.translation) asked of BM25
and of the main model; its own BM25 tokens say little about English text (only numbers and Latin words carry
over). Those weights are fitted on data (settings RAG_ZH_*); an English question's are as they were set by hand.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from rag.documents import Chunk, Filters, SentenceUnit
from rag.fusion import fuse
from rag.index_layout import MAIN_INDEX, MULTILINGUAL_INDEX
from rag.lexical import has_cjk, tokenize
from rag.reranking import RERANK_DEPTH, load_reranker, rerank
from rag.settings import Settings
from rag.store import Store
from rag.translation import translate

# The English model's view of Chinese passages for an English question: heard, but quietly. (A Chinese question's
# weights for English passages are fitted: settings RAG_ZH_*.)
CROSS_LANGUAGE_DENSE = 0.5
# The multilingual index holds a vector per chunk, which blurs a chunk of several targets: its best chunks are
# ranked again by their best sentence, embedded here (golden Chinese questions, k = 5: hit rate 0.909 -> 1.000,
# fact recall 0.818 -> 1.000 at 10; 20 and 40 did no better and took longer).
SENTENCE_RERANK_DEPTH = 10
# translated_*: the English retrievers asked with a Chinese question's dictionary translation (rag.translation).
RETRIEVERS = ("dense", "lexical", "multilingual", "translated_dense", "translated_lexical")


@dataclass(frozen=True)
class Retrieved:
    chunk: Chunk
    score: float  # fused RRF score; once re-ranked (rag.reranking), the re-ranking model's probability
    rank: int  # 1-based, final order
    dense: float = 0.0  # cosine similarity from the main model (0 when it did not find this chunk)
    lexical: float = 0.0  # BM25 score (0 when BM25 did not find it)
    ranks: dict[str, int] = field(default_factory=dict)  # rank in each retriever that found it


@dataclass(frozen=True)
class RetrievalResult:
    passages: list[Retrieved]
    timings: dict[str, float]


def search(store: Store, settings: Settings, question: str, *, k: int | None = None, filters: Filters | None = None,
           lexical_weight: float | None = None, dense_weight: float | None = None,
           multilingual_weight: float | None = None) -> RetrievalResult:
    """The top `k` passages for `question`, fused across retrievers; weights default to the settings."""
    k = k or settings.k
    overrides = {"dense": dense_weight, "lexical": lexical_weight, "multilingual": multilingual_weight}
    fusion = Fusion.from_settings(settings, has_cjk(question), overrides)
    runs, timings = retriever_runs(store, question, max(settings.candidates, k), filters,
                                   {name for name in RETRIEVERS if fusion.uses(name)})
    started = time.perf_counter()
    chunks = store.chunks(cid for run in runs.values() for cid, _ in run)
    reranked = settings.rerank and not fusion.cjk_question
    passages = fused_passages(runs, chunks, fusion.weight, fusion.rrf_k, max(k, RERANK_DEPTH) if reranked else k)
    timings["fusion_ms"] = _ms(started)
    if reranked:
        started = time.perf_counter()
        passages = rerank(question, passages, load_reranker())[:k]
        timings["rerank_ms"] = _ms(started)
    return RetrievalResult(passages, timings)


@dataclass(frozen=True)
class Fusion:
    """How one question's ranked lists are weighed: `same` for passages in the question's language (Chinese or
    not), `cross` for the others. A retriever with no weight in either is not run."""

    same: dict[str, float]
    cross: dict[str, float]
    rrf_k: int
    cjk_question: bool

    @classmethod
    def from_settings(cls, settings: Settings, cjk_question: bool,
                      overrides: dict[str, float | None] | None = None) -> Fusion:
        """The settings' fusion; an override replaces a retriever's weight in the question's language, and an
        override of 0 turns that retriever off altogether (for a Chinese question, its translated twin too)."""
        given = {name: weight for name, weight in (overrides or {}).items() if weight is not None}
        same = {"dense": settings.dense_weight, "lexical": settings.lexical_weight,
                "multilingual": settings.multilingual_weight, **given}
        if not cjk_question:
            return cls(same, dict(same, dense=same["dense"] * CROSS_LANGUAGE_DENSE), settings.rrf_k, False)
        cross = {"multilingual": settings.zh_multilingual_weight, "lexical": settings.zh_lexical_weight,
                 "dense": settings.zh_dense_weight, "translated_lexical": settings.zh_translated_lexical_weight,
                 "translated_dense": settings.zh_translated_dense_weight}
        for name in (name for name, weight in given.items() if not weight):
            cross.update({name: 0.0, f"translated_{name}": 0.0})
        return cls(same, cross, settings.zh_rrf_k, True)

    def uses(self, name: str) -> bool:
        return bool(self.same.get(name) or self.cross.get(name))

    def weight(self, name: str, chunk: Chunk) -> float:
        weights = self.cross if (chunk.language == "zh") != self.cjk_question else self.same
        return weights.get(name, 0.0)


def retriever_runs(store: Store, question: str, n: int, filters: Filters | None,
                   retrievers: set[str]) -> tuple[dict[str, list[tuple[str, float]]], dict[str, float]]:
    """Each named retriever's top `n` (chunk_id, score) for `question`, and the time each took."""
    timings: dict[str, float] = {}
    runs: dict[str, list[tuple[str, float]]] = {}
    cjk_question = has_cjk(question)

    started = time.perf_counter()
    if "dense" in retrievers:
        main = store.indexes[MAIN_INDEX].embedder
        runs["dense"] = store.dense_search(MAIN_INDEX, main.embed_query(question), n, filters)
    timings["dense_ms"] = _ms(started)

    started = time.perf_counter()
    if "lexical" in retrievers:
        runs["lexical"] = store.lexical_search(tokenize(question), n, filters)
    timings["lexical_ms"] = _ms(started)

    started = time.perf_counter()
    if MULTILINGUAL_INDEX in store.indexes and "multilingual" in retrievers:
        multilingual = store.indexes[MULTILINGUAL_INDEX].embedder
        scope = filters or Filters()
        if cjk_question or scope.language in (None, "zh"):
            if not cjk_question:  # an English question needs the multilingual model only for Chinese documents
                scope = replace(scope, language="zh")
            if cjk_question or store.document_count(scope):  # no Chinese document: the model need not even load
                vector = multilingual.embed_query(question)
                runs["multilingual"] = _by_best_sentence(
                    store, vector, store.dense_search(MULTILINGUAL_INDEX, vector, n, scope)
                )
    timings["multilingual_ms"] = _ms(started)

    if cjk_question and retrievers & {"translated_dense", "translated_lexical"}:
        started = time.perf_counter()
        runs.update(translated_runs(store, translate(question), n, filters, retrievers))
        timings["translated_ms"] = _ms(started)
    return runs, timings


def translated_runs(store: Store, english: str, n: int, filters: Filters | None,
                    retrievers: set[str]) -> dict[str, list[tuple[str, float]]]:
    """The English retrievers' lists for the English terms of a translated question."""
    runs = {}
    if "translated_lexical" in retrievers:
        runs["translated_lexical"] = store.lexical_search(tokenize(english), n, filters)
    if "translated_dense" in retrievers:
        vector = store.indexes[MAIN_INDEX].embedder.embed_query(english)
        runs["translated_dense"] = store.dense_search(MAIN_INDEX, vector, n, filters) if english else []
    return runs


def fused_passages(runs: dict[str, list[tuple[str, float]]], chunks: dict[str, Chunk],
                   weight: Callable[[str, Chunk], float], rrf_k: int, k: int) -> list[Retrieved]:
    """The `k` best chunks by weighted reciprocal rank over `runs` (rag.fusion), one copy of each passage text.
    A chunk missing from `chunks` (deleted since its list was made) is left out, its rank still taken."""
    ranked = fuse({name: [chunk_id for chunk_id, _ in run] for name, run in runs.items()},
                  lambda name, chunk_id: weight(name, chunks[chunk_id]) if chunk_id in chunks else 0.0, rrf_k)
    dense_scores, lexical_scores = dict(runs.get("dense", [])), dict(runs.get("lexical", []))
    passages: list[Retrieved] = []
    seen_texts: set[str] = set()
    for fused in (item for item in ranked if item.id in chunks):
        chunk = chunks[fused.id]
        fingerprint = _fingerprint(chunk.text)
        if fingerprint in seen_texts:  # the same passage from a second copy of a document
            continue
        seen_texts.add(fingerprint)
        passages.append(Retrieved(chunk, fused.score, len(passages) + 1, dense_scores.get(fused.id, 0.0),
                                  lexical_scores.get(fused.id, 0.0), fused.ranks))
        if len(passages) == k:
            break
    return passages


def sentence_vectors(store: Store, index: str, chunks: dict[str, Chunk]) -> dict[str, np.ndarray]:
    """Each chunk's sentence vectors in `index`'s model, a row per sentence unit: stored in the main index,
    embedded here for the multilingual index (which holds a vector per chunk)."""
    if index == MAIN_INDEX:
        return store.unit_vectors(MAIN_INDEX, chunks)
    embedder = store.indexes[index].embedder
    return {cid: _embedded_sentences(embedder, chunk.text, chunk.units) for cid, chunk in chunks.items()}


@lru_cache(maxsize=4096)
def _embedded_sentences(embedder, text: str, units: tuple[SentenceUnit, ...]) -> np.ndarray:
    """A chunk's sentences, labels written in (a few chunks per question, so no saving is worth their meaning)."""
    vectors = embedder.embed_passages([u.embedding_text(text) for u in units])
    vectors.setflags(write=False)
    return vectors


def _by_best_sentence(store: Store, vector: np.ndarray, hits: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """The multilingual run's first SENTENCE_RERANK_DEPTH chunks ordered by their best sentence's similarity."""
    head, tail = hits[:SENTENCE_RERANK_DEPTH], hits[SENTENCE_RERANK_DEPTH:]
    chunks = store.chunks(cid for cid, _ in head)
    best = {
        cid: float((rows @ vector).max()) for cid, rows in sentence_vectors(store, MULTILINGUAL_INDEX, chunks).items()
    }
    return sorted(((cid, best[cid]) for cid, _ in head if cid in best), key=lambda hit: -hit[1]) + tail


def _fingerprint(text: str) -> str:
    return hashlib.sha1(re.sub(r"\W+", " ", text.lower()).strip().encode()).hexdigest()


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
