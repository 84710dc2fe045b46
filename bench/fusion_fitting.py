"""What the fusion fits (bench/fit_chinese_fusion.py, bench/fit_english_fusion.py) share: chunks back from a
cache, folds held out by document, the choice among tied grid points, hit@k and MRR@k."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from rag.documents import Chunk, SentenceUnit


def chunks_of(records: dict) -> dict[str, Chunk]:
    """Chunks back from a cache's JSON fields (their sentence units as dicts)."""
    return {cid: Chunk(**{**fields, "units": tuple(SentenceUnit(**u) for u in fields.get("units", ()))})
            for cid, fields in records.items()}


def folds_by_document(groups: Iterable[str], folds: int) -> list[set[str]]:
    """The groups (documents) dealt into `folds` folds, largest first, each to the fold with the fewest questions;
    `groups` holds one entry per question."""
    sizes: dict[str, int] = {}
    for group in groups:
        sizes[group] = sizes.get(group, 0) + 1
    dealt: list[set[str]] = [set() for _ in range(folds)]
    load = [0] * folds
    for group in sorted(sizes, key=lambda g: (-sizes[g], g)):
        smallest = load.index(min(load))
        dealt[smallest].add(group)
        load[smallest] += sizes[group]
    return dealt


def best_index(values: np.ndarray, tie_key: Callable[[int], tuple]) -> int:
    """The index of the largest value; among ties (1e-9), the one with the smallest `tie_key`."""
    top = np.flatnonzero(values >= values.max() - 1e-9)
    return int(min(top, key=tie_key))


def first_covering_rank(ids: Iterable[str], covering: Iterable[str]) -> int:
    """1-based rank of the first id in `covering`, 0 when none is."""
    covering = set(covering)
    return next((rank for rank, cid in enumerate(ids, start=1) if cid in covering), 0)


def hit_and_mrr(ranks: Iterable[int | None], k: int) -> tuple[float, float]:
    """hit@k and MRR@k of first covering ranks (None or 0: none covers)."""
    ranks = list(ranks)
    found = [rank for rank in ranks if rank and rank <= k]
    n = len(ranks) or 1
    return len(found) / n, sum(1 / rank for rank in found) / n
