"""Files added through the chat page: stored under RAG_DATA_DIR/uploads/ with a safe, non-clobbering name."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

from rag.errors import LoadError
from rag.loaders import SUPPORTED_SUFFIXES


def safe_name(name: str) -> str:
    """A file name with no folders, no traversal, no control characters; its supported suffix kept."""
    name = unicodedata.normalize("NFKC", name).replace("\x00", "")
    name = re.split(r"[\\/]", name)[-1]  # drop any folder part, Windows or POSIX
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    stem = re.sub(r"[^\w.\- ]", "_", stem).strip(" ._") or "upload"
    suffix = suffix.lower()
    if f".{suffix}" not in SUPPORTED_SUFFIXES:
        raise LoadError(f"{name!r}: unsupported file type {('.' + suffix) if suffix else '(none)'!r}; "
                        f"supported: {', '.join(SUPPORTED_SUFFIXES)}")
    return f"{stem[:120]}.{suffix}"


def save_upload(folder: Path, name: str, data: bytes, max_file_mb: float) -> Path:
    """Write an upload; the same content under the same name is the same file, a different one gets a suffix."""
    if len(data) > max_file_mb * 1_000_000:
        raise LoadError(f"{name!r}: is {len(data) / 1e6:.1f} MB, over the limit RAG_MAX_FILE_MB={max_file_mb:g}")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / safe_name(name)
    digest = hashlib.sha256(data).hexdigest()[:8]
    if target.exists() and target.read_bytes() != data:
        target = target.with_name(f"{target.stem}-{digest}{target.suffix}")
    target.write_bytes(data)
    return target
