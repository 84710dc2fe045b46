"""Rank fusion: several retrievers' ranked lists made one by weighted reciprocal rank (RRF).

An id at rank r (1-based) of a list adds weight / (rrf_k + r) to its fused score. Only ranks count: the
retrievers' own scores (cosines, BM25) are on scales that cannot be added. Equal scores are ordered by id, so a
fusion comes out the same on every run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rag.errors import RagError


@dataclass(frozen=True)
class Fused:
    id: str
    score: float
    ranks: dict[str, int]  # the id's rank in each list that holds it


def fuse(runs: Mapping[str, Sequence[str]], weights: Mapping[str, float] | Callable[[str, str], float],
         rrf_k: int) -> list[Fused]:
    """Every id of `runs` (retriever name -> ids, best first), the best fused score first.

    `weights` is each retriever's weight (a retriever it does not name weighs 0), or a function of
    (retriever, id) when an item's weight depends on the item (retrieval weighs a list by each passage's
    language). A weight of 0 adds nothing, but the id is still in the result, with the ranks it had.
    """
    if rrf_k < 0:
        raise RagError(f"rrf_k={rrf_k}: the reciprocal rank constant must be 0 or more (RAG_RRF_K, RAG_ZH_RRF_K)")
    weight = weights if callable(weights) else _by_list(weights)
    scores: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    for name, ids in runs.items():
        for rank, item in enumerate(ids, start=1):
            scores[item] = scores.get(item, 0.0) + weight(name, item) / (rrf_k + rank)
            ranks.setdefault(item, {})[name] = rank
    return [Fused(item, scores[item], ranks[item]) for item in sorted(scores, key=lambda item: (-scores[item], item))]


def _by_list(weights: Mapping[str, float]) -> Callable[[str, str], float]:
    return lambda name, _: weights.get(name, 0.0)
