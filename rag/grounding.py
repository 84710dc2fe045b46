"""The output check: is a sentence supported by the passage it cites? Numbers, dates and names must stand in
the passage, and most content words too. `check_answer` runs it on every answer, whichever answerer wrote it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace

from rag.documents import Answer, Citation
from rag.lexical import tokenize

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NAME = re.compile(r"\b[A-Z][A-Za-z]+(?:[\s-]+[A-Z][A-Za-z]+)*\b|\b[A-Z]{2,}\b")
_MONTHS = ("january february march april may june july august september october november december "
           "jan feb mar apr jun jul aug sep sept oct nov dec").split()
MIN_CONTENT_SHARE = 0.6
_NUMBER_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
                 "eight": "8", "nine": "9", "ten": "10", "hundred": "100", "thousand": "1000"}
_NUMBER_WORD = re.compile(rf"\b({'|'.join(_NUMBER_WORDS)})\b", re.IGNORECASE)
_MARKER = re.compile(r"\s*\[\d+\]")
_ACCENT = re.compile(r"[\u0300-\u036f]")  # the combining accents of Latin letters, apart after NFKD
_LETTERS_OR_DIGITS = re.compile(r"\d+|[^\W\d_]+")


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
    """The comparison form for names: folded, words in one spelling ("Authorised Persons" = "authorized person",
    "Ergänzungsschulen" = "Erganzungsschulen", "SR99" = "SR 99"), padded with spaces so that a key found inside
    another matches whole words only."""
    text = _ACCENT.sub("", unicodedata.normalize("NFKD", fold(text)))
    words = re.findall(r"[^\W_]+", re.sub(r"\((?:e?s)\)", "", text))  # "Person(s)"
    # once per distinct word, since the rules key whole documents; letters and digits apart ("SR99" is "SR 99")
    spelt = {word: " ".join(_spelling(part) for part in _LETTERS_OR_DIGITS.findall(word)) for word in set(words)}
    return " " + " ".join(map(spelt.__getitem__, words)) + " "


def numbers_in(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(unicodedata.normalize("NFKC", text))}


def figures_in(text: str) -> set[str]:
    """The numbers of the text, those written as words too ("four primes" gives 4): one pass over it, since the
    abstention rules read whole documents."""
    return numbers_in(text) | {_NUMBER_WORDS[word.lower()] for word in _NUMBER_WORD.findall(text)}


def unsupported_reason(sentence: str, passage: str) -> str | None:
    """None when `passage` supports `sentence`; otherwise what is missing from it."""
    sentence = _MARKER.sub("", sentence)
    missing_numbers = sorted(numbers_in(sentence) - figures_in(passage))
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


def check_answer(answer_: Answer, mode: str) -> Answer:
    """The output filter: drop (or flag) sentences whose cited passage does not support them."""
    if answer_.abstained:
        return answer_
    kept_citations: list[Citation] = []
    kept_parts = []
    removed = 0
    by_marker = {c.marker: c for c in answer_.citations}
    passages = {r.chunk.chunk_id: r.chunk.text for r in answer_.retrieved}
    for sentence in split_cited_sentences(answer_.text):
        markers = [int(m) for m in re.findall(r"\[(\d+)\]", sentence)]
        cited = [by_marker[m] for m in markers if m in by_marker]
        reasons = [unsupported_reason(sentence, passages.get(c.chunk_id, c.quote)) for c in cited]
        if cited and any(r is None for r in reasons):
            kept_parts.append(sentence)
            kept_citations.extend(c for c, r in zip(cited, reasons) if r is None)
            continue
        removed += 1
        if mode == "flag":
            kept_parts.append(f"{sentence} (unsupported: {reasons[0] if reasons and reasons[0] else 'no citation'})")
            kept_citations.extend(cited)
    if removed == 0:
        return answer_
    if not kept_citations:
        return replace(answer_, text="The ingested documents do not support an answer to this question "
                                     "(every sentence drafted was unsupported by its sources).",
                       citations=(), abstained=True, reason="no sentence was supported by its cited passage",
                       removed=removed)
    notice = f"{removed} unsupported sentence{'s' if removed > 1 else ''} {'flagged' if mode == 'flag' else 'removed'}."
    return replace(answer_, text=" ".join(kept_parts), citations=tuple(dict.fromkeys(kept_citations)),
                   removed=removed, notices=answer_.notices + (notice,), reason=notice)


def split_cited_sentences(text: str) -> list[str]:
    """The answer cut after each group of markers: each piece is the text those markers cite; an uncited tail
    is a piece of its own."""
    pieces = [m.group(0).strip() for m in re.finditer(r".*?(?:\s*\[\d+\])+[.。]?", text.strip(), re.DOTALL)]
    tail = re.sub(r"^.*(?:\[\d+\])+[.。]?", "", text.strip(), flags=re.DOTALL).strip() if pieces else text.strip()
    return [p for p in pieces if p] + ([tail] if tail else [])
