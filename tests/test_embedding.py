"""The embedding backends: torch, and the same model through onnxruntime in fp32 and int8."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from rag.embedding import OnnxEmbedder
from rag.errors import StoreError
from rag.settings import BUNDLED_MODEL
from rag.store import MAIN_INDEX, Store

from conftest import make_settings

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


def test_a_store_built_with_torch_vectors_refuses_int8_ones(torch_model, models_dir, tmp_path):
    settings = make_settings(tmp_path / "data")
    Store.open(settings, {MAIN_INDEX: torch_model}).close()
    with pytest.raises(StoreError, match=r"all-MiniLM-L6-v2\+int8.*rag ingest --rebuild"):
        Store.open(settings, {MAIN_INDEX: OnnxEmbedder(BUNDLED_MODEL, 2, models_dir, quantized=True)})


def test_the_backend_setting_picks_the_embedder_and_caches_models_in_the_data_dir(tmp_path):
    from rag.embedding import SentenceTransformerEmbedder, main_embedder

    settings = make_settings(tmp_path / "data", embed_backend="onnx", models_dir=None)
    assert isinstance(main_embedder(settings), OnnxEmbedder)
    assert list((tmp_path / "data" / "models").glob("*-fp32.onnx"))
    assert type(main_embedder(make_settings(tmp_path / "data", embed_backend="torch"))) is SentenceTransformerEmbedder


def test_an_int8_vector_does_not_depend_on_what_it_is_encoded_with(models_dir):
    int8 = OnnxEmbedder(BUNDLED_MODEL, 16, models_dir, quantized=True)
    alone = np.stack([int8.embed_passages([sentence])[0] for sentence in SENTENCES])
    assert np.array_equal(int8.embed_passages(SENTENCES), alone)
    assert np.array_equal(int8.embed_query(SENTENCES[0]), alone[0])
