"""The main model run by onnxruntime: exported once from torch (fp32, or int8 by dynamic quantisation), cached
under RAG_DATA_DIR/models by a hash of the model folder's files. Once exported, questions and ingests need
neither torch nor sentence-transformers."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rag.encoders import SentenceTransformerEmbedder, cached_query, embedder_name, model_folder
from rag.errors import RagError

if TYPE_CHECKING:
    from tokenizers import Tokenizer


class OnnxEmbedder:
    """The same model run by onnxruntime: exported once from torch (fp32, or int8 by dynamic quantisation of
    its MatMuls), cached under RAG_DATA_DIR/models by a hash of the model folder's files. Once exported, it runs
    on onnxruntime and `tokenizers` alone (importing torch and sentence-transformers costs seconds a command);
    encoding is an `OnnxEncoder`, which encoder processes rebuild from `recipe()`."""

    def __init__(self, model: str, batch_size: int, models_dir: Path, quantized: bool):
        folder = model_folder(model)
        self.name = embedder_name(model, "onnx-int8" if quantized else "onnx")
        # int8: dynamic quantisation scales activations per batch, so a sentence's vector would depend on its
        # batch-mates (and ingest and import would disagree). One at a time it is deterministic, and on short
        # sentences no slower (bench: 13.9 s against 14.6 s at 16).
        self.batch_size = 1 if quantized else batch_size
        self.max_tokens = _max_seq_length(folder)
        path, tokenizer = _exported(model, folder, models_dir, quantized)
        self._encoder = OnnxEncoder(str(path), str(tokenizer), self.batch_size, threads=max(1, os.cpu_count() or 1))
        self.dim = self._encoder.dim
        self._recipe = (OnnxEncoder, (str(path), str(tokenizer), self.batch_size))
        self._tokenizer_file = str(tokenizer)
        self._counter: Tokenizer | None = None  # made when first needed: a question counts no tokens
        self._counter_lock = threading.Lock()

    def count_model_tokens(self, text: str) -> int:
        """Tokens in the model's own tokenizer, special tokens included (what max_seq_length limits)."""
        from tokenizers import Tokenizer

        with self._counter_lock:
            if self._counter is None:
                # Counting runs in ingest's parsing thread while encoding runs: its own tokenizer, without the
                # truncation and padding the encoder's are set to.
                self._counter = Tokenizer.from_file(self._tokenizer_file)
                self._counter.no_truncation()
                self._counter.no_padding()
            return len(self._counter.encode(text, add_special_tokens=True).ids)

    def fits(self, text: str) -> bool:
        """True when the model reads all of `text` (nothing cut off by max_seq_length)."""
        return self.count_model_tokens(text) <= self.max_tokens

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._encoder.embed_passages(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return cached_query(self, text)

    def recipe(self) -> tuple:
        """How an encoder process builds an encoder giving the same vectors."""
        return self._recipe


class OnnxEncoder:
    """An exported model in onnxruntime with its tokenizer (a `tokenizers` file, truncation and padding set),
    `threads` runs at once of one thread each: short sentences split poorly across threads (bench: 1 thread x 2
    runs encoded 15-30 % faster than 2 threads x 1 run)."""

    def __init__(self, path: str, tokenizer: str, batch_size: int, threads: int = 1):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        # No spinning: the parsing thread needs the cores between runs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        # A tokenizer's padding and truncation are mutable state: each run in flight gets its own copy, one per
        # thread and one more for questions, so that a question never waits behind an ingest's encoding. A copy is
        # loaded when its slot is first used (a question needs only the spare one).
        self._tokenizer_file = tokenizer
        self._tokenizers: list = [None] * (threads + 1)
        self._slots = [threading.Lock() for _ in range(threads + 1)]
        self.dim = int(self._session.get_outputs()[0].shape[1])  # exported with only the batch axis dynamic
        self.batch_size, self._threads = batch_size, threads

    def _tokenizer(self, slot: int):
        """The slot's tokenizer, loaded on its first use (call with the slot's lock held)."""
        if self._tokenizers[slot] is None:
            from tokenizers import Tokenizer

            self._tokenizers[slot] = Tokenizer.from_file(self._tokenizer_file)
        return self._tokenizers[slot]

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        # Longest first and similar lengths together, as sentence-transformers does: padding is wasted work.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [order[start:start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        vectors = np.zeros((len(texts), self.dim), np.float32)

        def encode(slot: int, mine: list[list[int]]) -> None:
            for batch in mine:
                with self._slots[slot]:  # per batch (onnxruntime runs are thread-safe; the tokenizer is not)
                    encodings = self._tokenizer(slot).encode_batch([texts[i] for i in batch])
                    features = {
                        "input_ids": [e.ids for e in encodings],
                        "attention_mask": [e.attention_mask for e in encodings],
                        "token_type_ids": [e.type_ids for e in encodings],
                    }
                    vectors[batch] = self._session.run(None, {name: np.array(features[name], np.int64)
                                                              for name in self._inputs})[0]

        if len(batches) <= 1:
            encode(self._threads, batches)  # a question (or a one-sentence document): the spare slot
        elif self._threads == 1:
            encode(0, batches)
        else:
            with ThreadPoolExecutor(self._threads) as pool:
                list(pool.map(lambda thread: encode(thread, batches[thread::self._threads]), range(self._threads)))
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


# The files of a sentence-transformers folder that decide its vectors and tokens: what an export is keyed by.
MODEL_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "1_Pooling/config.json",
)


def _max_seq_length(folder: Path) -> int:
    import json

    try:
        return int(json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RagError(
            f"{folder / 'sentence_bert_config.json'} gives no max_seq_length ({type(exc).__name__}: {exc}); "
            "RAG_EMBED_MODEL must name a sentence-transformers model folder"
        ) from None


def _folder_digest(folder: Path, models_dir: Path) -> str:
    """A hash of the model's files (names, sizes and bytes), remembered in `models_dir` under their sizes and
    modification times: hashing MiniLM's 90 MB of weights takes 0.1 s, a tenth of a question's start-up."""
    import hashlib
    import json

    files = [folder / name for name in MODEL_FILES if (folder / name).is_file()]
    stamp = hashlib.sha256(repr([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]).encode()).hexdigest()
    memo = models_dir / f"digest-{stamp[:24]}.json"
    with contextlib.suppress(OSError, ValueError):
        return json.loads(memo.read_text(encoding="utf-8"))["digest"]
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            digest.update(f"{path.relative_to(folder)}:{path.stat().st_size}:".encode())
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    key = digest.hexdigest()[:16]
    with contextlib.suppress(OSError):  # a read-only models dir: hash again next time
        models_dir.mkdir(parents=True, exist_ok=True)
        _write_whole(memo, lambda partial: partial.write_text(json.dumps({"digest": key}), encoding="utf-8"))
    return key


def _write_whole(path: Path, write) -> None:
    """`write(partial)` then rename: the file is whole or absent, whoever else writes it at the same time."""
    partial = path.with_suffix(f".{os.getpid()}.partial")
    write(partial)
    os.replace(partial, path)


def _save_tokenizer(model, path: Path) -> None:
    """The model's fast tokenizer as a `tokenizers` file, set to truncate and pad as sentence-transformers
    does. A file rather than a string: encoder processes get its path, and multiprocessing hangs on start-up
    data over a pipe's 64 KB if the new process dies before reading it."""
    tokenizer = model.tokenizer
    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    backend.enable_truncation(int(model.max_seq_length))
    backend.enable_padding(
        pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token, pad_type_id=tokenizer.pad_token_type_id
    )
    content = backend.to_str()
    _write_whole(path, lambda partial: partial.write_text(content, encoding="utf-8"))


def _exported(model: str, folder: Path, models_dir: Path, quantized: bool) -> tuple[Path, Path]:
    """The ONNX file and tokenizer file of this model folder, exporting (and quantising) it the first time:
    only then are torch and sentence-transformers imported."""
    key = _folder_digest(folder, models_dir)
    path = models_dir / f"{key}-{'int8' if quantized else 'fp32'}.onnx"
    tokenizer = models_dir / f"{key}-tokenizer.json"
    if path.exists() and tokenizer.exists():
        return path, tokenizer
    import torch

    transformer = SentenceTransformerEmbedder(model, batch_size=1)._model  # only to export it
    models_dir.mkdir(parents=True, exist_ok=True)
    if not tokenizer.exists():
        _save_tokenizer(transformer, tokenizer)
    fp32 = models_dir / f"{key}-fp32.onnx"
    if not fp32.exists():
        names = list(transformer.tokenizer(["a"], return_tensors="pt").keys())

        class Pipeline(torch.nn.Module):  # the whole model: transformer, pooling (and normalising, if it has one)
            def __init__(self):
                super().__init__()
                self.model = transformer

            def forward(self, *inputs):
                return self.model(dict(zip(names, inputs)))["sentence_embedding"]

        example = tuple(transformer.tokenizer(["an example", "a longer example sentence"], padding=True,
                                        return_tensors="pt").values())
        axes = {name: {0: "batch", 1: "tokens"} for name in names} | {"embedding": {0: "batch"}}

        def export(partial: Path) -> None:
            # The tracer warns about branches it fixes at export (padding, causality): none depends on the batch.
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(Pipeline().eval(), example, str(partial), input_names=names,
                                  output_names=["embedding"], dynamic_axes=axes, opset_version=17, dynamo=False)

        _write_whole(fp32, export)
    if quantized:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # What sentence-transformers calls "avx2": unsigned 8-bit weights per channel. Signed weights
        # overflow on CPUs without VNNI and give wrong vectors.
        # The quantiser logs generic advice through logging.warning(), which installs a handler on the root
        # logger and so makes every library's debug lines print: put the root logger back as it was.
        def quantize(partial: Path) -> None:
            root = logging.getLogger()
            level, handlers = root.level, list(root.handlers)
            root.setLevel(logging.ERROR)
            try:
                quantize_dynamic(fp32, partial, op_types_to_quantize=["MatMul"], per_channel=True,
                                 weight_type=QuantType.QUInt8)
            finally:
                root.setLevel(level)
                root.handlers[:] = handlers

        _write_whole(path, quantize)
    return path, tokenizer

