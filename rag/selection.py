"""Which sentence answers the question: a logistic model over signals any text has, fitted on labelled sentences.

The answerer computes one row of `FEATURES` per candidate sentence (rag.answer); the model turns it into the
probability that the sentence holds the answer. The weights come from `bench/fit_selection.py` (`make fit`), fitted
on the dev sets with folds held out by document, and are stored beside this module in `selection.json`; nothing
here was set by hand. Evaluating the model needs numpy only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from rag.errors import RagError

FEATURES = (
    "similarity",          # cosine of the sentence's stored vector and the question's
    "similarity_gap",      # how far below the best candidate's similarity
    "similarity_rank",     # 1 / (1 + its rank by similarity among the candidates)
    "terms",               # share of the question's terms in the sentence
    "rare_terms",          # the same, each term weighed by its rarity among the candidates
    "heading_terms",       # share of the question's terms in the label or heading above the sentence
    "type_fit",            # a figure for "how many", a date for "when", a name for "who", items for lists
    "figure_for_noun",     # a figure right before the counted noun
    "definition",          # "X is / means / refers to", or the sentence sits under the asked term
    "passage_rank",        # 1 / rank of its passage
    "position",            # 1 / (1 + its place in the passage)
    "log_words",           # log(1 + words)
    "short",               # under six words
    "block",               # a label with the bullet lines under it
    "truncated",           # ends in an ellipsis: a cut-off excerpt
    "cjk",                 # the question is Chinese (similarity from the multilingual model)
    "kind_numeric", "kind_date", "kind_who", "kind_list", "kind_definition", "kind_condition", "kind_summary",
)
MODEL_PATH = Path(__file__).with_name("selection.json")


@dataclass(frozen=True)
class SelectionModel:
    """Standardise, then logistic: P(answer) = 1 / (1 + exp(-(w . (x - mean) / scale + bias)))."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    abstain_below: float  # the calibrated probability under which the best sentence does not answer
    fitted_on: dict

    def probability(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros(0)
        logits = ((rows - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-logits))

    def to_json(self) -> dict:
        return {"features": list(FEATURES), "weights": self.weights.round(6).tolist(), "bias": round(self.bias, 6),
                "mean": self.mean.round(6).tolist(), "scale": self.scale.round(6).tolist(),
                "abstain_below": round(self.abstain_below, 4), "fitted_on": self.fitted_on}


def model_from_json(record: dict, where: str = "selection model") -> SelectionModel:
    if record.get("features") != list(FEATURES):
        raise RagError(f"{where} was fitted on other features than this version computes; run `make fit`")
    return SelectionModel(np.asarray(record["weights"], float), float(record["bias"]), np.asarray(record["mean"], float),
                          np.asarray(record["scale"], float), float(record["abstain_below"]), record.get("fitted_on", {}))


@lru_cache(maxsize=4)
def load_model(path: Path = MODEL_PATH) -> SelectionModel:
    try:
        return model_from_json(json.loads(path.read_text(encoding="utf-8")), str(path))
    except (OSError, ValueError, KeyError) as exc:
        raise RagError(f"The sentence selection model {path} cannot be read ({exc}); run `make fit`") from None
