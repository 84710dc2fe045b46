"""Is a sentence supported by the passage it cites? Numbers, dates and names must stand in the passage,
and most content words too. Used on every answer, whichever answerer wrote it.
"""

from __future__ import annotations

import re
import unicodedata

from rag.lexical import tokenize

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NAME = re.compile(r"\b[A-Z][A-Za-z]+(?:[\s-]+[A-Z][A-Za-z]+)*\b|\b[A-Z]{2,}\b")
_MONTHS = ("january february march april may june july august september october november december "
           "jan feb mar apr jun jul aug sep sept oct nov dec").split()
MIN_CONTENT_SHARE = 0.6
_NUMBER_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
                 "eight": "8", "nine": "9", "ten": "10", "hundred": "100", "thousand": "1000"}
_MARKER = re.compile(r"\s*\[\d+\]")


def fold(text: str) -> str:
    """NFKC, one kind of dash and quote, collapsed spaces, lower case: the comparison form used everywhere."""
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"[\u2010-\u2015\u2212]", "-", text)
    text = re.sub(r"[\u2018\u2019\u201b\u2032]", "'", text)
    text = re.sub(r"[\u201c\u201d\u201f\u2033]", '"', text)
    return " ".join(text.split()).lower()


def _spelling(word: str) -> str:
    """One spelling for a word's variants: British -ise/-isation as -ize/-ization, plurals as singular."""
    word = re.sub(r"is(e|ed|es|ing|ation|ations|er|ers)$", r"iz\1", word)
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def spelling_key(text: str) -> str:
    """The comparison form for names: folded, words in one spelling ("Authorised Persons" = "authorized person"),
    padded with spaces so that a key found inside another matches whole words only."""
    text = re.sub(r"\((?:e?s)\)", "", fold(text))  # "Person(s)"
    return " " + " ".join(_spelling(w) for w in re.findall(r"[^\W_]+", text)) + " "


def numbers_in(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(unicodedata.normalize("NFKC", text))}


def unsupported_reason(sentence: str, passage: str) -> str | None:
    """None when `passage` supports `sentence`; otherwise what is missing from it."""
    sentence = _MARKER.sub("", sentence)
    passage_numbers = numbers_in(passage) | {value for word, value in _NUMBER_WORDS.items()
                                             if re.search(rf"\b{word}\b", passage, re.IGNORECASE)}
    missing_numbers = sorted(numbers_in(sentence) - passage_numbers)
    if missing_numbers:
        return f"the figure {', '.join(missing_numbers)} is not in the cited passage"
    folded_passage = fold(passage)
    missing_names = [name for name in _NAME.findall(sentence)
                     if name.lower() not in _MONTHS and fold(name) not in folded_passage and len(name) > 2
                     and not _is_sentence_opener(sentence, name)]
    if missing_names:
        return f"the name {missing_names[0]!r} is not in the cited passage"
    words = [t for t in tokenize(sentence) if not t.isdigit()]
    if words:
        present = set(tokenize(passage))
        share = sum(1 for w in words if w in present) / len(words)
        if share < MIN_CONTENT_SHARE:
            return f"only {share:.0%} of its content words are in the cited passage"
    return None


def _is_sentence_opener(sentence: str, name: str) -> bool:
    """A capitalised first word ('The', 'By') is not a name; only multi-word or mid-sentence ones are checked."""
    stripped = sentence.lstrip("-•* \"'“")
    return stripped.startswith(name) and " " not in name
