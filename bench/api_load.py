"""`make bench`: a bounded load test of `rag api` on loopback.

8 clients (the `openai` package; half of them streaming) ask 25 golden-set questions each while a 198 KB
ObliQA rulebook is uploaded and ingested through the API. Every reply must be a 200 whose citations stand
verbatim in their document; the uploaded document must then be answerable. Reports p50/p95 per request and
writes bench/results/api_load.json. Default settings (int8 MiniLM + USE), store in a temporary folder.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.api_server import start_api, stop_api  # noqa: E402  (shared with tests/test_api.py)

UPLOAD = ROOT.parent / "shared" / "obliqa-dev" / "corpus" / "adgm-regulation-01.txt"
CLIENTS, QUESTIONS = 8, 25
START_UPLOAD_AFTER = 16  # answers, so that the ingest runs while every client is asking


def golden_questions() -> list[str]:
    with open(ROOT / "eval" / "golden.jsonl", encoding="utf-8") as handle:
        return [json.loads(line)["question"] for line in handle if line.strip()][:QUESTIONS]


class Run:
    """What the clients and the uploader record, under one lock."""

    def __init__(self, url: str):
        self.url = url
        self.lock = threading.Lock()
        self.answered_at: list[tuple[float, float]] = []  # (finished, seconds) of each good answer
        self.errors: list[str] = []
        self.finished_at: list[float] = []
        self.texts: dict[str, str] = {}
        self.answered = threading.Event()  # set once START_UPLOAD_AFTER answers are in
        self.upload: dict = {}

    def document_text(self, doc_id: str) -> str:
        with self.lock:
            if doc_id in self.texts:
                return self.texts[doc_id]
        text = httpx.get(f"{self.url}/v1/documents/{doc_id}", timeout=60).json()["text"]
        with self.lock:
            self.texts[doc_id] = text
        return text

    def check(self, content: str, fields: dict) -> str | None:
        for citation in fields.get("citations", []):
            if f"[{citation['marker']}]" not in content:
                return f"marker [{citation['marker']}] missing from the answer"
            if self.document_text(citation["doc_id"])[citation["start"]:citation["end"]] != citation["quote"]:
                return f"citation {citation['marker']} of {citation['doc_id']} is not verbatim at its offsets"
        return None

    def record(self, seconds: float | None, error: str | None) -> None:
        with self.lock:
            now = time.monotonic()
            if error:
                self.errors.append(error)
            else:
                self.answered_at.append((now, seconds))
            self.finished_at.append(now)
            if len(self.finished_at) >= START_UPLOAD_AFTER:
                self.answered.set()


def ask_all(run: Run, number: int, questions: list[str]) -> None:
    client = openai.OpenAI(base_url=f"{run.url}/v1", api_key="unused", max_retries=0, timeout=120)
    stream = number % 2 == 1
    for question in questions[number:] + questions[:number]:  # each client in its own order
        started = time.perf_counter()
        try:
            messages = [{"role": "user", "content": question}]
            if stream:
                chunks = list(client.chat.completions.create(model="policy-rag", messages=messages, stream=True))
                content = "".join(c.choices[0].delta.content or "" for c in chunks)
                fields = chunks[-1].model_extra
            else:
                completion = client.chat.completions.create(model="policy-rag", messages=messages)
                content, fields = completion.choices[0].message.content, completion.model_extra
            seconds = time.perf_counter() - started
            run.record(seconds, run.check(content, fields))
        except Exception as exc:  # any failure at all is an error of the run
            run.record(None, f"client {number}: {type(exc).__name__}: {exc}")


def upload(run: Run) -> None:
    run.answered.wait(timeout=300)
    started = time.monotonic()
    with open(UPLOAD, "rb") as handle:
        reply = httpx.post(f"{run.url}/v1/documents", files={"file": (UPLOAD.name, handle)}, timeout=600)
    run.upload = {"status_code": reply.status_code, "reply": reply.json(), "started": started,
                  "seconds": time.monotonic() - started}
    if reply.status_code != 201:
        with run.lock:
            run.errors.append(f"upload: {reply.status_code} {reply.text}")


def ms(seconds: list[float], share: float) -> float:
    """The `share` percentile of `seconds`, in milliseconds."""
    return round(statistics.quantiles(seconds, n=100, method="inclusive")[round(share * 100) - 1] * 1000, 1)


def main() -> int:
    if not UPLOAD.exists():
        sys.exit(f"{UPLOAD} is missing: this benchmark uploads an ObliQA rulebook (the soak's corpus)")
    folder = Path(tempfile.mkdtemp(prefix="rag-api-load-"))
    env = {**{k: v for k, v in os.environ.items() if k not in ("RAG_API_TOKEN", "RAG_MAX_FILE_MB")},
           "RAG_DATA_DIR": str(folder / "data"), "ANONYMIZED_TELEMETRY": "False"}
    done = subprocess.run([sys.executable, "-m", "rag", "ingest", str(ROOT / "corpus")], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"rag ingest failed: {done.stderr}")
    process, url = start_api(env, folder / "api.log")
    try:
        run = Run(url)
        questions = golden_questions()
        threads = [threading.Thread(target=ask_all, args=(run, n, questions)) for n in range(CLIENTS)]
        uploader = threading.Thread(target=upload, args=(run,))
        started = time.monotonic()
        for thread in threads + [uploader]:
            thread.start()
        for thread in threads + [uploader]:
            thread.join()
        wall = time.monotonic() - started
        uploaded = run.upload.get("reply", {}).get("doc_id")
        probe = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0).chat.completions.create(
            model="policy-rag", messages=[{"role": "user", "content": "To whom does the AML Rulebook apply?"}],
            extra_body={"doc_ids": [uploaded]})
        if not probe.model_extra["citations"]:
            run.errors.append(f"the uploaded document {uploaded} gives no cited answer")
    finally:
        stop_api(process)
    upload_start, upload_end = run.upload["started"], run.upload["started"] + run.upload["seconds"]
    latencies = [seconds for _, seconds in run.answered_at]
    during = [seconds for finished, seconds in run.answered_at  # overlapping the ingest, wholly or partly
              if finished >= upload_start and finished - seconds <= upload_end]
    result = {
        "date": time.strftime("%Y-%m-%d"), "clients": CLIENTS, "questions_per_client": QUESTIONS,
        "requests": len(run.finished_at), "errors": len(run.errors), "error_messages": run.errors[:10],
        "p50_ms": ms(latencies, 0.50), "p95_ms": ms(latencies, 0.95), "max_ms": round(max(latencies) * 1000, 1),
        "over_1s": sum(seconds > 1 for seconds in latencies),
        "during_ingest": {"requests": len(during), "p50_ms": ms(during, 0.50), "p95_ms": ms(during, 0.95)},
        "wall_s": round(wall, 1), "requests_per_s": round(len(run.finished_at) / wall, 1),
        "upload": {"file": UPLOAD.name, "bytes": UPLOAD.stat().st_size, "status_code": run.upload["status_code"],
                   "chunks": run.upload["reply"].get("chunks"), "seconds": round(run.upload["seconds"], 1)},
    }
    out = ROOT / "bench" / "results" / "api_load.json"
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
