"""Thumbs up/down from the chat, kept in RAG_DATA_DIR/feedback.jsonl; down-votes become golden-set candidates."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

from rag.documents import Answer

_lock = threading.Lock()


def record(path: Path, question: str, answer: Answer, vote: str) -> None:
    entry = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "question": question, "answer": answer.text, "abstained": answer.abstained, "vote": vote,
        "citations": [{"marker": c.marker, "doc_id": c.doc_id, "quote": c.quote} for c in answer.citations],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock, open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, ensure_ascii=False) + "\n")


def export_candidates(path: Path) -> tuple[list[dict], list[str]]:
    """Golden-set lines for each down-voted question, for a person to finish (answerable unknown, no evidence),
    and a note per line that is not a feedback entry (a torn last line from a crash, a hand edit), skipped."""
    if not path.exists():
        return [], []
    candidates: list[dict] = []
    seen: set[str] = set()
    skipped: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            skipped.append(f"{path}, line {number}: not valid JSON ({exc.msg}); skipped")
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("question", ""), str):
            skipped.append(f"{path}, line {number}: not a feedback entry (an object with a text 'question'); skipped")
            continue
        if entry.get("vote") != "down" or entry.get("question") in seen:
            continue
        seen.add(entry["question"])
        candidates.append({"id": f"fb{len(candidates) + 1:03d}", "question": entry["question"],
                           "reference_answer": "", "evidence": [], "answerable": None, "key_facts": [],
                           "tags": []})
    return candidates, skipped
