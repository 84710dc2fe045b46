"""How long the CLI takes, as a user starts it: each command a new process, against the import floor.

F is `python -c "import chromadb, onnxruntime, tokenizers, numpy, bm25s"`, the imports a question cannot do
without, measured in the same run and interleaved with the commands so all see the same machine load. Then, on
a store built from corpus/ (models exported before the clocks start): a cold `rag ask` (of a figure, of a person
and in Chinese), a no-change `rag ingest corpus` and `rag docs`. Medians of --runs; ratios to F. Writes
bench/results/cli_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOR = ["-c", "import chromadb, onnxruntime, tokenizers, numpy, bm25s"]
COMMANDS = {
    "ask": ["-m", "rag", "ask", "How many industrial datasets will be built by 2027?"],
    # a person is asked: the name rules need the list of common English words
    "ask_person": ["-m", "rag", "ask", "Who is the minister who signed the Opinions?"],
    # a Chinese question loads jieba, the dictionary and the multilingual models too; no issue sets its target
    "ask_chinese": ["-m", "rag", "ask", "到2027年要建成多少个工业数据集？"],
    "ingest_no_change": ["-m", "rag", "ingest", "corpus"],
    "docs": ["-m", "rag", "docs"],
}
TARGETS = {"ask": 1.6, "ask_person": 1.6, "ingest_no_change": 1.0, "docs": 0.5}


def timed(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cli_speed.json")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cli-speed-") as data_dir:
        env = {**os.environ, "RAG_DATA_DIR": data_dir}
        subprocess.run([sys.executable, "-m", "rag", "ingest", "corpus"], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        timed(COMMANDS["ask"], env)  # the first question exports nothing more, but warms the page cache
        seconds: dict[str, list[float]] = {"floor": [], **{name: [] for name in COMMANDS}}
        for _ in range(options.runs):
            seconds["floor"].append(timed(FLOOR, env))
            for name, args in COMMANDS.items():
                seconds[name].append(timed(args, env))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    floor = medians["floor"]
    results = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores", "runs": options.runs,
        "floor_s": round(floor, 3),
        "commands": {name: {"seconds": round(medians[name], 3), "ratio_to_floor": round(medians[name] / floor, 3),
                            "target_ratio": TARGETS.get(name),
                            "met": medians[name] / floor <= TARGETS[name] if name in TARGETS else None,
                            "all_seconds": [round(s, 3) for s in seconds[name]]} for name in COMMANDS},
        "floor_all_seconds": [round(s, 3) for s in seconds["floor"]],
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"import floor F = {floor:.2f} s")
    for name, row in results["commands"].items():
        verdict = "no target" if row["met"] is None else \
            f"target <= {row['target_ratio']} F: {'met' if row['met'] else 'MISSED'}"
        print(f"{name:18} {row['seconds']:6.2f} s  {row['ratio_to_floor']:.2f} F  ({verdict})")


if __name__ == "__main__":
    main()
