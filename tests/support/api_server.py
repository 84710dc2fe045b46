"""A real `rag api` process on a free loopback port, for the API tests and the API load benchmark."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def start_api(env: dict, log_path: Path, host: str = "127.0.0.1", wait_s: float = 300) -> tuple[subprocess.Popen, str]:
    """`rag api` with this environment (its RAG_* settings must be those of the store it serves); returns
    (process, base URL) once it answers. Its output goes to `log_path`, quoted when it fails to start."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "rag", "api", "--host", host, "--port", str(port)],
                                   cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"rag api exited with {process.returncode}: {log_path.read_text()}")
        try:
            httpx.get(f"{url}/v1/models", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"rag api did not answer within {wait_s:g} s: {log_path.read_text()}")


def stop_api(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=60)
