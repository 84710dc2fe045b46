"""A store that checks itself when it opens: damage is named with its fix, a read-only copy serves reads,
a full disk fails the write and leaves the store as it was."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from rag.ingest import ingest
from rag.store import MAIN_INDEX, catalog_listing

from conftest import CORPUS, ROOT, make_settings, run_rag as rag

QUESTION = "How many industrial datasets are to be built by 2027?"


@pytest.fixture
def built(tmp_path, open_store):
    """A data dir holding the corpus, closed again; (settings, environment for `rag`)."""
    settings = make_settings(tmp_path / "data")
    store = open_store(settings)
    assert ingest([CORPUS], settings, store).count("added") == 2
    store.close()
    return settings, {**os.environ, "RAG_DATA_DIR": str(settings.data_dir), "RAG_MULTILINGUAL_MODEL": "none"}


def test_a_deleted_chroma_folder_is_named_and_the_next_ingest_re_embeds_it(built, open_store):
    settings, env = built
    shutil.rmtree(settings.chroma_path)
    listed = rag(env, "docs")
    assert listed.returncode == 0 and "holds 0 of the" in listed.stderr
    assert "was damaged or deleted" in listed.stderr and "`rag ingest corpus/`" in listed.stderr
    store = open_store(settings)
    assert len(store.problems) == 1 and "holds 0 of the" in store.problems[0]
    report = ingest([CORPUS], settings, store)  # no --rebuild
    assert report.count("updated") == 2 and report.chunks_written > 0
    expected = store.catalog.expected_vectors()[MAIN_INDEX]
    assert store.indexes[MAIN_INDEX].count() == expected > 0
    store.close()
    again = open_store(settings)
    assert again.problems == []
    assert ingest([CORPUS], settings, again).count("unchanged") == 2


@pytest.mark.parametrize("size", [100, 4096])
def test_a_damaged_catalog_is_named_with_the_two_ways_back(built, size):
    settings, env = built
    with open(settings.catalog_path, "r+b") as catalog:
        catalog.truncate(size)
    damaged = settings.catalog_path.read_bytes()
    for args in (["docs"], ["ask", QUESTION]):
        done = rag(env, *args)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert f"The catalog {settings.catalog_path} is damaged" in done.stderr
        assert "`rag import EXPORT.jsonl --replace`" in done.stderr and "`rag ingest --rebuild`" in done.stderr
    assert settings.catalog_path.read_bytes() == damaged  # nothing was written over it


def test_an_empty_catalog_beside_stored_vectors_is_not_an_empty_store(built):
    settings, env = built
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.catalog_path}{suffix}").unlink(missing_ok=True)
    settings.catalog_path.write_bytes(b"")
    documents, problems = catalog_listing(settings)
    assert documents == [] and len(problems) == 1
    assert "lists no documents, but" in problems[0] and "vectors are stored" in problems[0]
    asked = rag(env, "ask", QUESTION)
    assert asked.returncode == 2 and "lists no documents, but" in asked.stderr and "holds no documents" not in asked.stderr
    assert "`rag import EXPORT.jsonl --replace`" in asked.stderr and "`rag ingest --rebuild`" in asked.stderr


def _read_only_copy(data_dir: Path) -> Path:
    """The data dir on a read-only bind mount (root cannot be kept out of a folder by its mode bits), or with
    its write bits removed for a user who is not root."""
    target = Path(tempfile.mkdtemp(prefix="rag-ro-"))
    if os.geteuid() != 0:
        shutil.copytree(data_dir, target / "data")
        subprocess.run(["chmod", "-R", "a-w", str(target / "data")], check=True)
        return target / "data"
    (target / "data").mkdir()
    mounted = subprocess.run(["mount", "--bind", str(data_dir), str(target / "data")], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only mount as root: {mounted.stderr.decode()[:200]}")
    subprocess.run(["mount", "-o", "remount,ro,bind", str(target / "data")], check=True)
    return target / "data"


def test_a_read_only_data_dir_serves_reads(built):
    settings, env = built
    read_only = _read_only_copy(settings.data_dir)
    try:
        with pytest.raises(OSError):
            (read_only / "probe").write_text("x")
        env = {**env, "RAG_DATA_DIR": str(read_only)}
        listed = rag(env, "docs")
        assert listed.returncode == 0 and "2 documents" in listed.stdout, listed.stderr
        asked = rag(env, "ask", QUESTION)
        assert asked.returncode == 0 and "100 high" in asked.stdout, asked.stderr
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(read_only)], check=False)
        else:
            subprocess.run(["chmod", "-R", "u+w", str(read_only)], check=False)


def test_a_full_disk_fails_the_write_with_a_message_and_leaves_the_store_as_it_was(built, tmp_path):
    settings, env = built
    before = rag(env, "docs").stdout
    big = tmp_path / "new" / "big-report.txt"
    big.parent.mkdir()
    big.write_text("\n\n".join(f"Section {n}. The province will build {n} new computing centres by 2030, "
                               f"training {n * 7} engineers every year." for n in range(3000)), encoding="utf-8")
    # Every file this ingest writes may grow to the size of the largest file the store already has, and no
    # more: the first large write fails as on a full disk (EFBIG, with SIGXFSZ ignored).
    limit = max(path.stat().st_size for path in settings.data_dir.rglob("*") if path.is_file())
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
        "from rag.cli import main\n"
        f"sys.exit(main(['ingest', {str(big)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "The disk refused a write to the store in" in done.stderr
    assert "free some space" in done.stderr
    assert rag(env, "docs").stdout == before
    asked = rag(env, "ask", QUESTION)
    assert asked.returncode == 0 and "100 high" in asked.stdout and "warning" not in asked.stderr
    # added, updated, unchanged, removed, failed: both unchanged, nothing to repair
    assert re.search(r"│\s+0 │\s+0 │\s+2 │\s+0 │\s+0 │\s+0 │", rag(env, "ingest", str(CORPUS)).stdout)
