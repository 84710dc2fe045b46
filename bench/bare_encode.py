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
    from rag.index_layout import index_entries

    work = {}
    for key, index in store.indexes.items():
        entries = [e for c in chunks for e in index_entries(key, c)]
        work[key] = (index.embedder, [e.text for e in entries], [e.label for e in entries])
    return work


def pooled_in_ingest(store, chunk_groups: list[list]) -> list[bool]:
    """Whether one ingest of these groups encodes each of them in encoder processes (after POOL_AFTER_TEXTS)."""
    from rag.embedding import POOL_AFTER_TEXTS
    from rag.index_layout import MAIN_INDEX

    flags, embedded = [], 0
    for group in chunk_groups:
        flags.append(embedded >= POOL_AFTER_TEXTS)
        embedded += len(index_work(store, group)[MAIN_INDEX][1])
    return flags


def timed_encode(store, chunk_groups: list[list], only: str | None = None, pooled: list[bool] | None = None) -> float:
    """Seconds to embed the groups' vectors as ingest does (with `only`, that one index alone). `pooled` says
    which groups go to encoder processes; by default those an ingest of just these groups would send there."""
    from rag.embedding import POOL_SLICE, EncoderPool, embed_indexes

    embedders = {key: index.embedder for key, index in store.indexes.items() if only in (None, key)}
    pooled = pooled_in_ingest(store, chunk_groups) if pooled is None else pooled
    pool = EncoderPool(embedders) if any(pooled) and EncoderPool.can_run(embedders) else None
    try:
        for key in embedders if pool else ():
            pool.encode(key, ["warm up"] * POOL_SLICE * 8)  # every process started and its models loaded
        started = time.perf_counter()
        for group, in_pool in zip(chunk_groups, pooled):
            work = index_work(store, group)
            embed_indexes({key: ((pool.embedders[key] if pool and in_pool else embedder), *work[key][1:])
                           for key, embedder in embedders.items()})
        return time.perf_counter() - started
    finally:
        if pool:
            pool.close()


def vector_counts(store, chunk_groups: list[list]) -> dict[str, int]:
    return {key: len(job[1]) for key, job in index_work(store, [c for g in chunk_groups for c in g]).items()}
