"""BM25 over the stored chunks (bm25s sparse matrices), persisted beside the store and swapped atomically.

Tokens: lower-cased words, English stop words dropped, Snowball-stemmed; CJK runs cut by jieba.
The index is rebuilt from the catalog's cached tokens after each write, never per query.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

TOKENIZER_VERSION = "2"
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[^\W_]+")
_THOUSANDS = re.compile(r"(?<=\d)[,\u00a0](?=\d{3}\b)")
STOP_WORDS = frozenset(
    "a an and are as at be been but by can could did do does for from had has have how i if in into is it its "
    "many may might much must no not of on or our shall should so such than that the their them then there these "
    "they this those to too was were what when where which who whom why will with would you your about also "
    "any each other over under up out more most some only own same very just".split()
)
CHINESE_STOP_WORDS = frozenset(
    ("的 了 和 是 在 与 及 等 对 中 为 将 把 被 也 就 都 而 或 之 其 以 于 要 有 个 "
     "吗 呢 什么 哪些 多少 哪个 如何 怎么").split()
)


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def jieba_tokenizer():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


def tokenize(text: str) -> list[str]:
    """BM25 tokens of English and Chinese text alike (Chinese words inside English text too)."""
    text = _THOUSANDS.sub("", text.lower())
    tokens: list[str] = []
    cursor = 0
    for run in _CJK_RUN.finditer(text):
        tokens.extend(_latin_tokens(text[cursor:run.start()]))
        tokens.extend(
            t for t in jieba_tokenizer().cut_for_search(run.group()) if t.strip() and t not in CHINESE_STOP_WORDS
        )
        cursor = run.end()
    tokens.extend(_latin_tokens(text[cursor:]))
    return tokens


def _latin_tokens(text: str) -> list[str]:
    words = [w for w in _WORD.findall(text) if w not in STOP_WORDS]
    return _stemmer().stemWords(words) if words else []


_WORD_OR_CJK = re.compile(r"[\u3400-\u9fff]|[^\W\u3400-\u9fff]+")


def word_count(text: str) -> int:
    """Words of English and Chinese text alike: a CJK character counts as a word."""
    return len(_WORD_OR_CJK.findall(text))


def neighbour_pairs(words: Sequence[str]) -> set[tuple[str, str]]:
    """Each word with the one after it: what a copied phrase shares and a reworded one does not."""
    return set(zip(words, words[1:]))


def has_cjk(text: str) -> bool:
    return bool(_CJK_RUN.search(text))


@dataclass(frozen=True)
class LexicalEntry:
    chunk_id: str
    tokens: list[str]
    doc_id: str


class LexicalIndex:
    """An immutable BM25 index over entries, with each chunk's document for filter masks."""

    def __init__(self, retriever, chunk_ids: list[str], doc_ids: list[str], generation: int):
        self._retriever = retriever
        self.chunk_ids = chunk_ids
        self.doc_ids = np.asarray(doc_ids, dtype=object)
        self.generation = generation

    @classmethod
    def build(cls, entries: list[LexicalEntry], generation: int) -> LexicalIndex:
        import bm25s

        retriever = None
        if entries:
            retriever = bm25s.BM25()
            retriever.index([entry.tokens for entry in entries], show_progress=False)
        return cls(retriever, [e.chunk_id for e in entries], [e.doc_id for e in entries], generation)

    def __len__(self) -> int:
        return len(self.chunk_ids)

    def search(self, tokens: list[str], n: int, mask: np.ndarray | None = None) -> list[tuple[str, float]]:
        """Top `n` (chunk_id, score) with a positive score, among chunks where `mask` is true."""
        if self._retriever is None or not tokens or n <= 0:
            return []
        known = [t for t in tokens if t in self._retriever.vocab_dict]
        if not known:
            return []
        weight = None if mask is None else mask.astype(np.float32)
        docs, scores = self._retriever.retrieve(
            [known], k=min(n, len(self.chunk_ids)), show_progress=False, weight_mask=weight, n_threads=0
        )
        return [(self.chunk_ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]

    def mask(self, doc_ids: Iterable[str]) -> np.ndarray:
        """A boolean array selecting the chunks of `doc_ids`."""
        return np.isin(self.doc_ids, list(doc_ids))

    # Persistence: each generation in its own folder, CURRENT names the live one (replaced atomically).

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"gen-{self.generation}"
        staging = folder / f".staging-{self.generation}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            if self._retriever is not None:
                self._retriever.save(str(staging / "bm25"), show_progress=False)
            (staging / "meta.json").write_text(json.dumps({
                "generation": self.generation, "tokenizer": TOKENIZER_VERSION, "chunk_ids": self.chunk_ids,
                "doc_ids": list(self.doc_ids),
            }))
            _fsync_tree(staging)
        except BaseException:  # a full disk: leave no half-written staging folder behind
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        pointer = folder / ".CURRENT.tmp"
        pointer.write_text(target.name)
        with open(pointer, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(pointer, folder / "CURRENT")
        for old in folder.glob("gen-*"):
            if old.name != target.name:
                shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex | None:
        """The live index, or None when there is none (or it was swapped away while reading)."""
        import bm25s

        try:
            target = folder / (folder / "CURRENT").read_text().strip()
            meta = json.loads((target / "meta.json").read_text())
            if meta.get("tokenizer") != TOKENIZER_VERSION:
                return None
            retriever = bm25s.BM25.load(str(target / "bm25"), show_progress=False) if meta["chunk_ids"] else None
        except (OSError, ValueError, KeyError):
            return None
        return cls(retriever, meta["chunk_ids"], meta["doc_ids"], int(meta["generation"]))

    @staticmethod
    def live_generation(folder: Path) -> str | None:
        try:
            return (folder / "CURRENT").read_text().strip()
        except OSError:
            return None


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
