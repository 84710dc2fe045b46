"""Which sentence answers the question: a logistic model over signals any text has, fitted on labelled sentences.

The answerer computes one row of `FEATURES` per candidate sentence (rag.candidates); the sentence model turns it
into the probability that the sentence holds the answer, and the answerable model turns the best candidates'
figures (`question_features`) into the probability that the passages answer the question at all; a second
multilingual model's reading of a Chinese question's best candidates (`second_opinion`) chooses the lead and
joins those figures. The weights
come from `bench/fit_selection.py` (`make fit`), fitted on the dev sets with folds held out by document, and are
stored beside this module in `selection.json`; nothing here was set by hand. Evaluating the model needs numpy only.
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
    "translated_similarity",  # a Chinese question's dictionary translation against an English sentence (MiniLM)
    "similarity_rank",     # 1 / (1 + its rank by similarity among the candidates)
    "translated_similarity_gap",  # how far below the best candidate's (a Chinese question's translation)
    "terms",               # share of the question's terms in the sentence
    "terms_gap", "rare_terms_gap", "heading_terms_gap",  # each how far below the question's best candidate
    "rare_terms",          # the same, each term weighed by its rarity among the candidates
    "heading_terms",       # share of the question's terms in the label or heading above the sentence
    "word_pairs",          # share of the question's pairs of neighbouring words the sentence has ("the 2015 season")
    # fit to the question's type, one feature per type so each weighs its own: a figure for "how many", a day
    # (or a year, when a year is asked) for "when", a named body for "who", several items for lists
    "type_fit_numeric", "type_fit_date", "type_fit_who", "type_fit_list",
    "figure_for_noun",     # a figure right before the counted noun
    "definition",          # "X is / means / refers to", or the sentence sits under the asked term
    "passage_rank",        # 1 / rank of its passage
    "passage_score",       # its passage's fused score, as a share of the best passage's
    "position",            # 1 / (1 + its place in the passage)
    "log_words",           # log(1 + words)
    "short",               # under six words
    "block",               # a label with the bullet lines under it
    "truncated",           # ends in an ellipsis: a cut-off excerpt
    "multilingual_similarity",  # question or sentence is Chinese: the similarity is the multilingual model's (its
                                # own scale), and terms reach English text only through the dictionary translation
    "terms_anywhere",      # share of the question's terms found in any candidate (the same for all of them)
    "kind_numeric", "kind_date", "kind_who", "kind_list", "kind_definition", "kind_condition", "kind_summary",
)
# Whether the passages answer the question at all, from its best candidates: the second model of selection.json.
QUESTION_FEATURES = (
    "best_probability",
    "second_probability",
    "best_similarity",
    "best_terms",
    "best_rare_terms",
    "best_heading_terms",
    "best_type_fit",
    "log_candidates",
    "terms_anywhere",
    "multilingual_similarity",
    "kind_numeric",
    "kind_date",
    "kind_who",
    "kind_list",
    "kind_definition",
    "kind_condition",
    "kind_summary",
    # A Chinese question: the second model's best cosine among the candidates it read, less its median on the
    # answerable Chinese questions of the fit; 0 (as typical) for a question it did not read.
    "second_opinion_cosine",
)
MODEL_PATH = Path(__file__).with_name("selection.json")


def question_features(rows: np.ndarray, probabilities: np.ndarray, second_opinion_cosine: float = 0.0) -> np.ndarray:
    """One row of QUESTION_FEATURES from a question's candidate rows (FEATURES), their probabilities and the
    second opinion's best cosine as far from the typical one (0: not read, or typical)."""
    if len(rows) == 0:
        return np.zeros(len(QUESTION_FEATURES))
    column = {name: rows[:, n] for n, name in enumerate(FEATURES)}
    column["multilingual_similarity"] = np.full(len(rows), column["multilingual_similarity"].mean())  # a share
    ranked = np.sort(probabilities)[::-1]
    values = {
        "best_probability": ranked[0],
        "second_probability": ranked[1] if len(ranked) > 1 else 0.0,
        "best_similarity": column["similarity"].max(),
        "best_terms": column["terms"].max(),
        "best_rare_terms": column["rare_terms"].max(),
        "best_heading_terms": column["heading_terms"].max(),
        "best_type_fit": max(column[f"type_fit_{kind}"].max() for kind in ("numeric", "date", "who", "list")),
        "log_candidates": np.log1p(len(rows)),
        "second_opinion_cosine": second_opinion_cosine,
        **{
            name: column[name][0]
            for name in QUESTION_FEATURES
            if name.startswith("kind_") or name in ("multilingual_similarity", "terms_anywhere")
        },
    }
    return np.asarray([values[name] for name in QUESTION_FEATURES], dtype=float)


def read_multilingual(rows: np.ndarray) -> bool:
    """Most of the question's candidates were scored by the multilingual model (question or passages Chinese)."""
    return len(rows) > 0 and float(rows[:, FEATURES.index("multilingual_similarity")].mean()) > 0.5


@dataclass(frozen=True)
class Logistic:
    """Standardise, then logistic: P = 1 / (1 + exp(-(w . (x - mean) / scale + bias)))."""

    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray

    def probability(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros(0)
        logits = ((np.atleast_2d(rows) - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-logits))

    def to_json(self, features: tuple[str, ...]) -> dict:
        return {"features": list(features), "weights": self.weights.round(6).tolist(), "bias": round(self.bias, 6),
                "mean": self.mean.round(6).tolist(), "scale": self.scale.round(6).tolist()}


def logistic_from_json(record: dict, features: tuple[str, ...], where: str) -> Logistic:
    if record.get("features") != list(features):
        raise RagError(f"{where} was fitted on other features than this version computes; run `make fit`")
    return Logistic(np.asarray(record["weights"], float), float(record["bias"]), np.asarray(record["mean"], float),
                    np.asarray(record["scale"], float))


@dataclass(frozen=True)
class SelectionModel:
    sentence: Logistic  # P(this sentence holds the answer), fitted on the questions of every language
    # The same, fitted on Chinese questions alone: their similarity is the multilingual model's and their terms
    # reach English text through a dictionary, so the signals weigh otherwise (held out, it picks better for them
    # and the English questions lose nothing by keeping the Chinese ones in theirs).
    chinese_sentence: Logistic
    # P(the passages answer the question), from its candidates: one for questions read by the main model, one for
    # those read by the multilingual ones (a Chinese question, or passages in Chinese: `read_multilingual`).
    answerable: Logistic
    multilingual_answerable: Logistic
    # The calibrated answerable probability under which the answer abstains, one per answerable model: their
    # probabilities are scaled otherwise (bench/fit_selection.py chooses the pair).
    abstain_below: float
    multilingual_abstain_below: float
    # How much a second multilingual model's reading counts in choosing a Chinese question's lead (`second_opinion`),
    # and the median of its best cosine on the answerable Chinese questions of the fit.
    second_opinion_weight: float
    second_opinion_typical: float
    fitted_on: dict

    def probability(self, rows: np.ndarray, chinese_question: bool) -> np.ndarray:
        return (self.chinese_sentence if chinese_question else self.sentence).probability(rows)

    def answerable_probability(self, rows: np.ndarray, probabilities: np.ndarray,
                               second_opinion_cosine: float | None = None) -> float:
        """`second_opinion_cosine`: the second model's best cosine (`Opinion.cosine`), None when it did not read
        the question (an English question, or the model turned off), which then counts as typical."""
        offset = 0.0 if second_opinion_cosine is None else second_opinion_cosine - self.second_opinion_typical
        model = self.multilingual_answerable if read_multilingual(rows) else self.answerable
        return float(model.probability(question_features(rows, probabilities, offset))[0])

    def abstain_threshold(self, rows: np.ndarray) -> float:
        return self.multilingual_abstain_below if read_multilingual(rows) else self.abstain_below

    def to_json(self) -> dict:
        return {"sentence": self.sentence.to_json(FEATURES),
                "chinese_sentence": self.chinese_sentence.to_json(FEATURES),
                "answerable": self.answerable.to_json(QUESTION_FEATURES),
                "multilingual_answerable": self.multilingual_answerable.to_json(QUESTION_FEATURES),
                "abstain_below": round(self.abstain_below, 4),
                "multilingual_abstain_below": round(self.multilingual_abstain_below, 4),
                "second_opinion_weight": round(self.second_opinion_weight, 4),
                "second_opinion_typical": round(self.second_opinion_typical, 4), "fitted_on": self.fitted_on}


def model_from_json(record: dict, where: str = "selection model") -> SelectionModel:
    return SelectionModel(logistic_from_json(record["sentence"], FEATURES, where),
                          logistic_from_json(record["chinese_sentence"], FEATURES, where),
                          logistic_from_json(record["answerable"], QUESTION_FEATURES, where),
                          logistic_from_json(record["multilingual_answerable"], QUESTION_FEATURES, where),
                          float(record["abstain_below"]), float(record["multilingual_abstain_below"]),
                          float(record["second_opinion_weight"]),
                          float(record["second_opinion_typical"]), record.get("fitted_on", {}))


# How many of a Chinese question's best candidates the second model reads: 3, 5, 10 and 20 chose the same sentence
# about as often (xquad-dev Chinese), and each sentence read costs about 20 ms (a short one 6 ms) on two cores.
SECOND_OPINION_DEPTH = 5


@dataclass(frozen=True)
class Opinion:
    lead: int  # the candidate that leads the answer (its index)
    cosine: float  # the second model's best cosine among the candidates it read (a QUESTION_FEATURES signal)


def second_opinion(question: str, texts: list[str], probabilities: np.ndarray, reader, weight: float) -> Opinion:
    """Which candidate leads a Chinese question's answer once a second multilingual model (`reader`:
    embed_query / embed_passages) has read the best SECOND_OPINION_DEPTH, with other eyes than the first:
    the best of logit(p) + weight * (its cosine - the best of their cosines). Only the lead changes; whether
    a runner-up joins it is still the first model's call (re-weighed, the runners-up would fall so far
    behind that answers lost their second sentence: golden Chinese fact recall 0.694 -> 0.649 held out)."""
    head, cosines = second_reading(question, texts, probabilities, reader)
    return Opinion(leading(probabilities, head, cosines, weight), float(cosines.max()))


def second_reading(question: str, texts: list[str], probabilities: np.ndarray, reader) -> tuple[np.ndarray, np.ndarray]:
    """The first model's best SECOND_OPINION_DEPTH candidates (their indices) and the second model's cosines."""
    head = np.argsort(-probabilities, kind="stable")[:SECOND_OPINION_DEPTH]
    return head, reader.embed_passages([texts[n] for n in head]) @ reader.embed_query(question)


def leading(probabilities: np.ndarray, head: np.ndarray, cosines: np.ndarray, weight: float) -> int:
    return int(np.argmax(reweighed(probabilities, head, cosines, weight)))


def reweighed(probabilities: np.ndarray, head: np.ndarray, cosines: np.ndarray, weight: float) -> np.ndarray:
    clipped = np.clip(probabilities[head], 1e-6, 1 - 1e-6)
    logits = np.log(clipped / (1 - clipped)) + weight * (cosines - cosines.max())
    found = probabilities.astype(float).copy()
    found[head] = 1.0 / (1.0 + np.exp(-logits))
    return found


@lru_cache(maxsize=4)
def load_model(path: Path = MODEL_PATH) -> SelectionModel:
    try:
        return model_from_json(json.loads(path.read_text(encoding="utf-8")), str(path))
    except (OSError, ValueError, KeyError) as exc:
        raise RagError(f"The sentence selection model {path} cannot be read ({exc}); run `make fit`") from None
