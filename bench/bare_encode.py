"""The bare encode a benchmark compares an ingest with: the stored chunks' vectors embedded again by the same
embedders and the same way ingest embeds them (groups of whole documents of at least GROUP_CHUNKS chunks, every
index at once, each distinct label once per group, after POOL_AFTER_TEXTS texts in encoder processes, started
before the clock), and nothing else."""

from __future__ import annotations

import time
from collections.abc import Iterable


def groups(store, doc_ids: Iterable[str] | None = None) -> list[list]:
    """The chunks of `doc_ids` (all documents when None) in the groups ingest would embed them in."""
    from rag.ingest import GROUP_CHUNKS

    wanted = [d.doc_id for d in store.documents()] if doc_ids is None else list(doc_ids)
    found, group = [], []
    for doc_id in wanted:
        group.extend(store.document_chunks(doc_id))
        if len(group) >= GROUP_CHUNKS:
            found.append(group)
            group = []
    return found + ([group] if group else [])


def index_work(store, chunks: list) -> dict[str, tuple]:
    """Per index: (embedder, texts, labels) of the chunks' vectors, as `rag.embedding.embed_indexes` takes them."""
    from rag.chunking import sentence_units
    from rag.store import index_entries

    work = {}
    for key, index in store.indexes.items():
        entries = [e for c in chunks for e in index_entries(key, c, sentence_units(c.text, c.section))]
        work[key] = (index.embedder, [e.text for e in entries], [e.label for e in entries])
    return work


def timed_encode(store, chunk_groups: list[list], only: str | None = None) -> float:
    """Seconds to embed the groups' vectors as ingest does (with `only`, that one index alone)."""
    from rag.embedding import POOL_AFTER_TEXTS, POOL_SLICE, EncoderPool, embed_indexes
    from rag.store import MAIN_INDEX

    embedders = {key: index.embedder for key, index in store.indexes.items() if only in (None, key)}
    pool = EncoderPool(embedders) if EncoderPool.can_run(embedders) else None
    try:
        for key in embedders if pool else ():
            pool.encode(key, ["warm up"] * POOL_SLICE * 8)  # every process started and its models loaded
        started, embedded = time.perf_counter(), 0
        for group in chunk_groups:
            work = index_work(store, group)
            pooled = pool and embedded >= POOL_AFTER_TEXTS
            embed_indexes({key: ((pool.embedders[key] if pooled else embedder), *work[key][1:])
                           for key, embedder in embedders.items()})
            embedded += len(work[MAIN_INDEX][1])
        return time.perf_counter() - started
    finally:
        if pool:
            pool.close()


def vector_counts(store, chunk_groups: list[list]) -> dict[str, int]:
    return {key: len(job[1]) for key, job in index_work(store, [c for g in chunk_groups for c in g]).items()}
