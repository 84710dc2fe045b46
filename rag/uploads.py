"""Files added through the chat page or the API: stored under RAG_DATA_DIR/uploads/ with a safe, non-clobbering
name, then ingested."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

from rag.errors import FileTooLargeError, LoadError, UnsupportedFileError
from rag.ingest import FileOutcome, Progress, ingest
from rag.loaders import SUPPORTED_SUFFIXES
from rag.settings import Settings
from rag.store import Store


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
        raise UnsupportedFileError(f"{name!r}: unsupported file type {('.' + suffix) if suffix else '(none)'!r}; "
                                   f"supported: {', '.join(SUPPORTED_SUFFIXES)}")
    return f"{stem[:120]}.{suffix}"


def save_upload(folder: Path, name: str, data: bytes, max_file_mb: float) -> Path:
    """Write an upload; the same content under the same name is the same file, a different one gets a suffix."""
    if len(data) > max_file_mb * 1_000_000:
        raise FileTooLargeError(
            f"{name!r}: is {len(data) / 1e6:.1f} MB, over the limit RAG_MAX_FILE_MB={max_file_mb:g}; "
            "split it or raise the limit"
        )
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / safe_name(name)
    digest = hashlib.sha256(data).hexdigest()[:8]
    if target.exists() and target.read_bytes() != data:
        target = target.with_name(f"{target.stem}-{digest}{target.suffix}")
    target.write_bytes(data)
    return target


def ingest_upload(
    name: str, data: bytes, settings: Settings, store: Store, progress: Progress | None = None
) -> FileOutcome:
    """Save an upload and ingest it: its outcome (added, updated or unchanged), or a LoadError saying why not."""
    path = save_upload(settings.uploads_dir, name, data, settings.max_file_mb)
    report = ingest([path], settings, store, progress=progress, files_root=settings.uploads_dir)  # doc_id: its name
    if report.failures:
        raise LoadError(report.failures[0].message)
    return report.outcomes[0]
