"""Score retrieval, answers, citations, abstention and latency against a golden Q&A set (rag.eval_run runs one).

Normalisation (everywhere): Unicode NFKC, dashes and quotes folded, whitespace collapsed, lower case.
A retrieved chunk *covers* an evidence quote when the normalised quote is a substring of the normalised chunk,
or at least 80 % of the quote's word tokens (\\w+) occur in the chunk.

Metrics (answerable questions unless said otherwise):
  retrieval_hit_rate     share with a covering chunk in the top k
  retrieval_mrr          mean of 1 / rank of the first covering chunk (0 when none)
  context_recall         share of all evidence quotes covered by some retrieved chunk
  answer_fact_recall     share of key facts (any `|` alternative) found in the normalised answer, averaged per
                         question; an abstention finds none; questions without key facts are left out
  answer_token_f1        token F1 between the answer and the reference answer (abstention: 0)
  citation_precision     over all questions' citations: the quote stands verbatim in the cited chunk and that
                         chunk covers some evidence of the question
  abstention_recall      unanswerable questions abstained on
  false_abstention_rate  answerable questions abstained on
  latency_p50_ms / latency_p95_ms   wall time of answer(), all questions
A metric whose denominator is empty is None ("n/a").
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import RagError
from rag.grounding import fold

METRICS = ("retrieval_hit_rate", "retrieval_mrr", "context_recall", "answer_fact_recall", "answer_token_f1",
           "citation_precision", "abstention_recall", "false_abstention_rate", "latency_p50_ms", "latency_p95_ms")
# A system that only retrieves (a peer) has the first group and none of the second.
RETRIEVAL_METRICS = METRICS[:3]
ANSWER_METRICS = METRICS[3:]
LOWER_IS_BETTER = {"false_abstention_rate", "latency_p50_ms", "latency_p95_ms"}
TAGS = ("numeric", "list", "paraphrase", "cross-doc", "unanswerable", "chinese", "date", "who")
FIELDS = {"id": str, "question": str, "reference_answer": str, "evidence": list, "answerable": bool,
          "key_facts": list, "tags": list}
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class GoldenQuestion:
    id: str
    question: str
    reference_answer: str
    evidence: tuple[str, ...]
    answerable: bool
    key_facts: tuple[str, ...]
    tags: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True)
class GoldenProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def load_golden(path: Path, corpus_texts: list[str] | None = None) -> tuple[list[GoldenQuestion], list[GoldenProblem]]:
    """Parse a golden file; every bad line is a problem with its line number, the good lines are kept."""
    questions: list[GoldenQuestion] = []
    problems: list[GoldenProblem] = []
    seen: dict[str, int] = {}
    haystack = fold("\n".join(corpus_texts)) if corpus_texts is not None else None
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a BOM, as some editors write, is no field
    except (OSError, UnicodeDecodeError) as exc:
        raise RagError(f"The golden file {path} cannot be read ({exc}); pass --golden with a JSON Lines file") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(GoldenProblem(number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(record, dict):
            problems.append(GoldenProblem(number, "a line must be a JSON object"))
            continue
        wrong = [f"field {name!r} must be {kind.__name__}, got {type(record.get(name)).__name__}"
                 for name, kind in FIELDS.items() if not isinstance(record.get(name), kind)]
        wrong += [f"field {name!r} must hold strings only" for name in ("evidence", "key_facts", "tags")
                  if isinstance(record.get(name), list) and not all(isinstance(v, str) for v in record[name])]
        if wrong:
            problems.append(GoldenProblem(number, "; ".join(wrong)))
            continue
        if record["id"] in seen:
            problems.append(
                GoldenProblem(number, f"duplicate id {record['id']!r} (first on line {seen[record['id']]})")
            )
            continue
        seen[record["id"]] = number
        if haystack is not None:
            absent = [quote for quote in record["evidence"] if fold(quote) not in haystack]
            if absent:
                problems.append(GoldenProblem(number, f"evidence not found in the corpus: {absent[0][:80]!r}"))
                continue
        questions.append(GoldenQuestion(record["id"], record["question"], record["reference_answer"],
                                        tuple(record["evidence"]), record["answerable"], tuple(record["key_facts"]),
                                        tuple(record["tags"]), number))
    return questions, problems


def covers(chunk_text: str, quote: str) -> bool:
    """The coverage rule of the module docstring."""
    chunk = fold(chunk_text)
    folded_quote = fold(quote)
    if folded_quote in chunk:
        return True
    words = _WORD.findall(folded_quote)
    if not words:
        return False
    present = set(_WORD.findall(chunk))
    return sum(1 for w in words if w in present) >= 0.8 * len(words)


def fact_found(fact: str, answer_text: str) -> bool:
    folded = fold(answer_text)
    return any(fold(alternative) in folded for alternative in fact.split("|") if alternative.strip())


def token_f1(prediction: str, reference: str) -> float:
    predicted = _WORD.findall(fold(prediction))
    expected = _WORD.findall(fold(reference))
    if not predicted or not expected:
        return 0.0
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def score_question(question: GoldenQuestion, answer: dict, latency_ms: float) -> dict:
    """One report row: the answer as given, plus what it found and missed."""
    retrieved = answer["retrieved"]
    hit_rank = next((r["rank"] for r in retrieved if any(covers(r["text"], q) for q in question.evidence)), None)
    covered = [q for q in question.evidence if any(covers(r["text"], q) for r in retrieved)]
    texts = {r["chunk_id"]: r["text"] for r in retrieved}
    answer_text = "" if answer["abstained"] else answer["answer"]
    facts_found = [f for f in question.key_facts if fact_found(f, answer_text)]
    citations = []
    for citation in answer["citations"]:
        chunk = texts.get(citation["chunk_id"], "")
        precise = (
            bool(chunk) and fold(citation["quote"]) in fold(chunk) and any(covers(chunk, q) for q in question.evidence)
        )
        citations.append({"marker": citation["marker"], "doc_id": citation["doc_id"], "quote": citation["quote"],
                          "precise": precise})
    return {
        "id": question.id,
        "question": question.question,
        "tags": list(question.tags),
        "answerable": question.answerable,
        "answer": answer["answer"],
        "abstained": answer["abstained"],
        "reason": answer.get("reason", ""),
        "removed": answer.get("removed", 0),
        "retrieved": [
            {"doc_id": r["doc_id"], "title": r["title"], "text": r["text"], "score": r["score"]} for r in retrieved
        ],
        "citations": citations,
        "latency_ms": round(latency_ms, 1),
        "hit_rank": hit_rank,
        "evidence_covered": len(covered),
        "evidence_total": len(question.evidence),
        "facts_found": facts_found,
        "facts_missing": [f for f in question.key_facts if f not in facts_found],
        "token_f1": round(token_f1(answer_text, question.reference_answer), 4) if question.answerable else None,
        "reference_answer": question.reference_answer,
        "key_facts": list(question.key_facts),
    }


def summarise(rows: list[dict]) -> dict:
    """Every metric of the module docstring over `rows` (None where its denominator is empty)."""
    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    with_facts = [r for r in answerable if r["key_facts"]]
    citations = [c for r in rows if not r["abstained"] for c in r["citations"]]
    latencies = sorted(r["latency_ms"] for r in rows)

    def mean(values):
        values = list(values)
        return round(sum(values) / len(values), 4) if values else None

    return {
        "questions": len(rows),
        "retrieval_hit_rate": mean(1.0 if r["hit_rank"] else 0.0 for r in answerable),
        "retrieval_mrr": mean(1.0 / r["hit_rank"] if r["hit_rank"] else 0.0 for r in answerable),
        "context_recall": (round(sum(r["evidence_covered"] for r in answerable)
                                 / sum(r["evidence_total"] for r in answerable), 4)
                           if sum(r["evidence_total"] for r in answerable) else None),
        "answer_fact_recall": mean(len(r["facts_found"]) / len(r["key_facts"]) for r in with_facts),
        "answer_token_f1": mean(r["token_f1"] for r in answerable),
        "citation_precision": mean(1.0 if c["precise"] else 0.0 for c in citations),
        "abstention_recall": mean(1.0 if r["abstained"] else 0.0 for r in unanswerable),
        "false_abstention_rate": mean(1.0 if r["abstained"] else 0.0 for r in answerable),
        "latency_p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "latency_p95_ms": round(percentile(latencies, 95), 1) if latencies else None,
        "sentences_removed": sum(r.get("removed", 0) for r in rows),
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0.0
    index = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def by_tag(rows: list[dict]) -> dict[str, dict]:
    tags = sorted({tag for r in rows for tag in r["tags"]})
    return {tag: summarise([r for r in rows if tag in r["tags"]]) for tag in tags}


@dataclass
class EvalRun:
    summary: dict
    by_tag: dict
    rows: list[dict]
    settings: dict
    peers: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"summary": self.summary, "by_tag": self.by_tag, "settings": self.settings, "peers": self.peers,
                "questions": self.rows}


def missed_thresholds(summary: dict, thresholds: dict[str, float]) -> list[str]:
    """Messages for each threshold missed; lower-is-better metrics must not exceed theirs."""
    missed = []
    for metric, threshold in thresholds.items():
        value = summary.get(metric)
        if value is None:
            missed.append(f"{metric} is n/a (no questions to measure it), threshold {threshold}")
        elif (value > threshold) if metric in LOWER_IS_BETTER else (value < threshold):
            relation = "above" if metric in LOWER_IS_BETTER else "below"
            missed.append(f"{metric} = {value} is {relation} the threshold {threshold}")
    return missed


def parse_thresholds(items: list[str]) -> dict[str, float]:
    thresholds = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in METRICS:
            raise RagError(f"--fail-under {item!r}: unknown metric {name!r}; use one of {', '.join(METRICS)}")
        try:
            thresholds[name] = float(value)
        except ValueError:
            raise RagError(f"--fail-under {item!r}: {value!r} is not a number") from None
    return thresholds


def parse_set_thresholds(items: list[str], set_names: list[str]) -> dict[str, dict[str, float]]:
    """`SET:METRIC=VALUE` items of a suite run, by set name."""
    by_set: dict[str, list[str]] = {}
    for item in items:
        name, colon, threshold = item.partition(":")
        if not colon or name not in set_names:
            raise RagError(
                f"--fail-under {item!r}: with --suite, write SET:METRIC=VALUE with SET one of {', '.join(set_names)}"
            )
        by_set.setdefault(name, []).append(threshold)
    return {name: parse_thresholds(found) for name, found in by_set.items()}


def compare(summary: dict, old: dict) -> list[tuple[str, Any, Any, float | None, bool | None]]:
    """(metric, new, old, change, better?) for each metric."""
    changes: list[tuple[str, Any, Any, float | None, bool | None]] = []
    for metric in METRICS:
        new, before = summary.get(metric), old.get("summary", {}).get(metric)
        if new is None or before is None:
            changes.append((metric, new, before, None, None))
            continue
        delta = round(new - before, 4)
        better = None if delta == 0 else (delta < 0) == (metric in LOWER_IS_BETTER)
        changes.append((metric, new, before, delta, better))
    return changes


def read_report(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RagError(
            f"--compare {path}: cannot read the old report ({exc}); give a report.json from `rag eval`"
        ) from None
