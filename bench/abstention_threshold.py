"""How RAG_ABSTAIN_THRESHOLD is chosen: the best sentence's support for every golden question and for clearly
off-topic probes, side by side in one run.

    python bench/abstention_threshold.py

The extractive answerer abstains by rule first (a figure, name, unit or date the passages lack); a question
that passes the rules reaches the threshold on its best sentence's support. Asked with a threshold no answer
reaches, every such question abstains and states its support (to 0.01), which gives the candidates; each is
then tried on the answerable questions as the answerer applies it. The chosen threshold is the largest with no
false abstention. Writes bench/results/abstention_threshold.json.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROBES = [
    "'; DROP TABLE documents; --",
    '{"$where": {"doc_id": {"$ne": ""}}}',
    "What is the capital of France?",
    "How do I bake sourdough bread?",
    "Who won the 2018 FIFA World Cup?",
    "What is the boiling point of water at sea level?",
    "Recommend a good science fiction novel.",
    "How tall is Mount Everest?",
    "Translate 'good morning' into Spanish.",
    "What will the weather be like in Paris tomorrow?",
    "Explain the rules of chess.",
    "How many legs does a spider have?",
]
_SUPPORT = re.compile(r"score (-?\d+\.\d+) <")


def supports(questions: list[str], settings, store) -> list[float | None]:
    """Each question's best support (to 0.01), or None when a rule abstains before the threshold is reached."""
    from rag.answer import answer

    probing = settings.model_copy(update={"abstain_threshold": 10.0})
    found = []
    for question in questions:
        match = _SUPPORT.search(answer(question, probing, store=store).reason)
        found.append(float(match.group(1)) if match else None)
    return found


def weakly_supported(questions: list[str], threshold: float, settings, store) -> int:
    """How many of the questions abstain for their support at `threshold`."""
    from rag.answer import answer

    trying = settings.model_copy(update={"abstain_threshold": threshold})
    return sum("only weakly" in answer(question, trying, store=store).reason for question in questions)


def main() -> None:
    from rag.embedding import embedders
    from rag.evaluation import load_golden
    from rag.ingest import ingest
    from rag.settings import load_settings
    from rag.store import Store

    golden = load_golden(ROOT / "eval" / "golden.jsonl")[0]
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(data_dir=folder)
        store = Store.open(settings, embedders(settings))
        ingest([ROOT / "corpus"], settings, store)
        questions = [q.question for q in golden if q.answerable]
        answerable = [s for s in supports(questions, settings, store) if s is not None]
        unanswerable = supports([q.question for q in golden if not q.answerable], settings, store)
        probes = supports(PROBES, settings, store)
        tried = {}
        for candidate in sorted({round(min(answerable) + step / 100, 2) for step in (-2, -1, 0, 1)}):
            tried[candidate] = weakly_supported(questions, candidate, settings, store)
        store.close()
    threshold = max(candidate for candidate, false in tried.items() if not false)
    result = {
        "answerable_reaching_threshold": len(answerable), "lowest_answerable_support": min(answerable),
        "false_abstentions_by_threshold": tried, "threshold": threshold,
        "unanswerable_supports": [None if s is None else round(s, 3) for s in unanswerable],
        "unanswerable_caught_by_rules": sum(s is None for s in unanswerable),
        "unanswerable_caught_by_threshold": sum(s is not None and s < threshold for s in unanswerable),
        "probe_supports": {q: None if s is None else round(s, 3) for q, s in zip(PROBES, probes)},
        "probes_caught": sum(s is None or s < threshold for s in probes), "probes": len(PROBES),
    }
    out = ROOT / "bench" / "results" / "abstention_threshold.json"
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
