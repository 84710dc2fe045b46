"""Which fused passages come first: an English question's best RERANK_DEPTH passages ordered again by a logistic
model over signals any retrieval has, fitted on labelled passages.

Reciprocal rank fusion sees only ranks; the model also sees the retrievers' own scores, how much of the
question the passage holds (its terms, weighed by rarity among the candidates, and its word pairs, which carry
phrases such as "Authorised Person" or "prospectus offer"), and its heading. The weights come from
`bench/fit_reranker.py` (`make fit`), fitted on the English dev sets with folds held out by document, and are
stored beside this module in `reranker.json`; nothing here was set by hand. A Chinese question keeps its fitted
fusion, and a Chinese passage its fused place (their lists are other retrievers'; the fit saw none of them).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag.errors import RagError
from rag.lexical import neighbour_pairs, tokenize
from rag.questions import content_terms
from rag.selection import Logistic, logistic_from_json

if TYPE_CHECKING:
    from rag.retrieval import Retrieved

RERANK_DEPTH = 40  # the fused passages the model orders (the fit's: each retriever gives 40 candidates)
FEATURES = (
    "fused_score",    # the RRF score, as a share of the best
    "fused_rank",     # 1 / its rank by RRF
    "dense_rank",     # 1 / its rank in the main model's list (0: not in it)
    "lexical_rank",   # 1 / its rank in BM25's list (0: not in it)
    "dense_score",    # its cosine with the question (its best sentence)
    "dense_gap",      # how far below the best cosine of the candidates
    "lexical_score",  # its BM25 score, as a share of the best
    "terms",          # share of the question's terms in the passage
    "rare_terms",     # the same, each term weighed by its rarity among the candidates
    "heading_terms",  # share of the question's terms in its title and section heading
    "log_words",      # log(1 + words)
    "word_pairs",     # share of the question's adjacent token pairs found adjacent in the passage
)
MODEL_PATH = Path(__file__).with_name("reranker.json")


def passage_features(question: str, passages: Sequence[Retrieved]) -> np.ndarray:
    """One row of FEATURES per passage, in the order given (the fused order)."""
    if not passages:
        return np.zeros((0, len(FEATURES)))
    terms = set(content_terms(question))
    pairs = neighbour_pairs(tokenize(question))
    tokens = [_tokens(p.chunk.text) for p in passages]
    found = [set(t) for t in tokens]
    rarity = {t: math.log(1 + len(passages) / (1 + sum(t in f for f in found))) for t in terms}
    total_rarity = sum(rarity.values()) or 1.0
    dense, lexical = _scores(passages, "dense"), _scores(passages, "lexical")
    best_fused = passages[0].score or 1.0
    best_lexical = lexical.max() or 1.0
    rows = []
    for n, (passage, words, present) in enumerate(zip(passages, tokens, found)):
        heading = set(tokenize(f"{passage.chunk.title} {passage.chunk.section}"))
        dense_rank, lexical_rank = passage.ranks.get("dense"), passage.ranks.get("lexical")
        rows.append([
            passage.score / best_fused,
            1.0 / passage.rank,
            1.0 / dense_rank if dense_rank else 0.0,
            1.0 / lexical_rank if lexical_rank else 0.0,
            dense[n],
            dense[n] - dense.max(),
            lexical[n] / best_lexical,
            len(terms & present) / max(1, len(terms)),
            sum(rarity[t] for t in terms & present) / total_rarity,
            len(terms & heading) / max(1, len(terms)),
            math.log1p(len(passage.chunk.text.split())),
            len(pairs & neighbour_pairs(words)) / max(1, len(pairs)),
        ])
    return np.asarray(rows, dtype=float)


def rerank(question: str, passages: list[Retrieved], model: Logistic) -> list[Retrieved]:
    """The passages best first by the model's probability, which becomes their score; ties keep the fused order.
    The model orders the English passages among the places they hold: a Chinese passage, found for an English
    question by the multilingual model whose list the fit never saw, keeps its fused place, with the score of the
    passage above it (1 at the top)."""
    english = [n for n, p in enumerate(passages) if p.chunk.language != "zh"]
    probabilities = model.probability(passage_features(question, [passages[n] for n in english]))
    best_first = iter(sorted(range(len(english)), key=lambda i: -probabilities[i]))
    places = set(english)
    found, score = [], 1.0
    for n, passage in enumerate(passages):
        if n in places:
            i = next(best_first)
            passage, score = passages[english[i]], float(probabilities[i])
        found.append(replace(passage, score=round(score, 6), rank=n + 1))
    return found


def _scores(passages: Sequence[Retrieved], retriever: str) -> np.ndarray:
    """Each passage's score in a retriever's list; one the list does not hold (it ranked below the list's end)
    gets the lowest score the list gives among these passages."""
    given = [getattr(p, retriever) if retriever in p.ranks else None for p in passages]
    floor = min((g for g in given if g is not None), default=0.0)
    return np.asarray([floor if g is None else g for g in given], dtype=float)


@lru_cache(maxsize=8192)
def _tokens(text: str) -> tuple[str, ...]:
    return tuple(tokenize(text))


@lru_cache(maxsize=4)
def load_reranker(path: Path = MODEL_PATH) -> Logistic:
    try:
        return logistic_from_json(json.loads(path.read_text(encoding="utf-8")), FEATURES, str(path))
    except (OSError, ValueError, KeyError) as exc:
        raise RagError(f"The passage re-ranking model {path} cannot be read ({exc}); run `make fit`") from None
