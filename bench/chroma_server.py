"""A `chroma run` server on 127.0.0.1 for the benchmarks (the tests have their own fixture in conftest)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path


class ChromaServer:
    """Started on a free port; `kill()` then `start()` again brings it back on the same port and folder."""

    def __init__(self, path: Path):
        self.path, self.process = path, None
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ChromaServer:
        self.process = subprocess.Popen([str(Path(sys.executable).parent / "chroma"), "run", "--path", str(self.path),
                                         "--host", "127.0.0.1", "--port", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("chroma run did not start")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
