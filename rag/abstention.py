"""Abstention rules that hold for any text: what the question requires (a year, a figure, a name) and the
passages' documents never give. They run before and beside the selection model's answerable probability."""

from __future__ import annotations

import re
from functools import lru_cache

from rag.candidates import UNITS, Candidate, figure_for_noun, type_fit
from rag.grounding import figures_in, numbers_in, spelling_key
from rag.lexical import tokenize
from rag.questions import Question
from rag.retrieval import Retrieved
from rag.store import Store
from rag.translation import common_english_words


def before_ranking(asked: Question, passages: list[Retrieved], candidates: list[Candidate], store: Store) -> str | None:
    """Why the passages cannot answer, by the rules that need no model: a year, figure or name of the question
    their documents never contain, or a count they never give."""
    if missing := missing_required(asked, passages, store):
        return f"they never mention {missing}"
    return numeric_problem(asked, candidates) if asked.kind == "numeric" else None


def after_ranking(asked: Question, ranked: list[Candidate], candidates: list[Candidate]) -> str | None:
    """Why the passages cannot answer, by the rules of strict question types once the candidates are ranked
    (`ranked`: what rag.candidates.rank_candidates left of `candidates`)."""
    if not ranked:
        wanted = ({"numeric": "a figure", "date": "a date"}.get(asked.kind)
                  or (f"the name asked for ({asked.wants_name_of})" if asked.wants_name_of else "a person's name"))
        return f"no passage on this gives {wanted}"
    if asked.strict_type and (subject := subject_without_typed_answer(asked, candidates)):
        wanted = "date" if asked.kind == "date" else "figure" if asked.kind == "numeric" else "name"
        return f"they mention {subject} but give no {wanted} for it"
    return None


def missing_required(asked: Question, passages: list[Retrieved], store: Store) -> str | None:
    """A year, figure or name from the question that none of the passages' documents contains (the passage that
    answers "How many 2015 interceptions?" need not say 2015 itself, but its article must)."""
    documents = {(p.chunk.doc_id, p.chunk.doc_sha256): p.chunk.title for p in passages}  # each document once
    keys = [_document_keys(store, doc_id, version) for doc_id, version in documents]
    numbers = set().union(*(n for n, _ in keys))
    names = " ".join(k for _, k in keys) + " ".join(spelling_key(title) for title in documents.values())
    # A Chinese text may write in Chinese what a Chinese question writes in Latin letters ("AI" as 人工智能).
    names_in_latin = not (asked.cjk and any(p.chunk.language == "zh" for p in passages))
    for term in asked.required:
        if term[0].isdigit():
            if term.replace(",", "") not in numbers:
                return term
        elif names_in_latin and not _named_in(term, names):
            return term
    return None


def _named_in(name: str, names: str) -> bool:
    """The name is there, or each of its words is, or one of its words that is no common English word is (a name
    quoted in part or misspelt elsewhere: "Lor Loudoun", "Graham Twigg" written "Twigg"; but "United States" is
    not named by a text that only says "state")."""
    key = spelling_key(name)
    words = key.split()
    present = [f" {w} " in names for w in words]
    return key in names or all(present) or any(
        found and word not in common_english_words() for word, found in zip(words, present))


@lru_cache(maxsize=256)
def _document_keys(store: Store, doc_id: str, version: str) -> tuple[frozenset[str], str]:
    """The figures and the name key of one version of a document (read once per version)."""
    text = store.document_text(doc_id) or ""
    return frozenset(figures_in(text)), spelling_key(text)


def subject_without_typed_answer(asked: Question, candidates: list[Candidate]) -> str | None:
    """A name from the question whose passages carry no sentence of the asked type ('Overseas Version': no date)."""
    for name in [*(t for t in asked.required if not t[0].isdigit()), *asked.one_word_names]:
        about = [c for c in candidates if spelling_key(name) in spelling_key(c.passage.chunk.text)]
        if about and not any(
            type_fit(asked, c.text, False) > 0 or (asked.kind == "numeric" and _NUMBER_IN.search(c.text)) for c in about
        ):
            return name
    return None


_NUMBER_IN = re.compile(r"\d")


def numeric_problem(asked: Question, candidates: list[Candidate]) -> str | None:
    """A count the documents never give: no amount in the asked unit, or the counted thing never with a figure."""
    if asked.unit and not any(UNITS[asked.unit].search(c.text.lower()) for c in candidates):
        return f"no passage gives an amount in {asked.unit}"
    if not asked.head_noun:
        return None
    if asked.head_noun in _SPANS_OF_TIME and not any(figure_for_noun(c.text, asked)[0] for c in candidates):
        return f"no passage gives a number of {asked.head_noun}s"  # a span of time comes with its unit
    mentions = [c for c in candidates if _mentions_counted_thing(c.text, asked)]
    if any(_mentions_counted_thing(c.text, asked, figure_after=True) for c in mentions):
        return None  # "the career sack leader with 136": the figure follows the counted thing
    figures = [figure_for_noun(c.text, asked) for c in mentions]
    thing = " ".join(re.findall(r"[\w-]+", _counted_text(asked.standalone))) or asked.head_noun
    if any(found for found, _ in figures) and not any(found and matched for found, matched in figures):
        return f"they give figures for other kinds of {thing.split()[-1]}, not for {thing}"
    if asked.modifiers and mentions and not any(found for found, _ in figures):  # "humanoid robots", never counted
        return f"they mention {thing} but give no number for them"
    return None


def _mentions_counted_thing(text: str, asked: Question, figure_after: bool = False) -> bool:
    """The counted noun, with one of the question's qualifiers right before it ('humanoid robots'), and with
    `figure_after` a figure within the next few words ('career sack leader with 136')."""
    words = re.findall(r"[\w,.]+", text.lower())
    stems = [t[0] if t else "" for t in (tokenize(w) for w in words)]
    asked_figures = numbers_in(asked.text) if figure_after else set()
    for position, stem in enumerate(stems):
        if stem != asked.head_noun or (asked.modifiers and not (position and stems[position - 1] in asked.modifiers)):
            continue
        if not figure_after:
            return True
        after = [w.strip(",.").replace(",", "") for w in words[position + 1:position + 1 + _FIGURE_AFTER]]
        if any(_FIGURE.fullmatch(w) and w not in asked_figures for w in after):
            return True
    return False


# Units that prose writes out ("18 months"); distances and weights are often abbreviated ("5,500,000 km2").
_SPANS_OF_TIME = frozenset(tokenize("days weeks months years"))
_FIGURE = re.compile(r"\d[\d,.]*")
_FIGURE_AFTER = 4  # words after the counted noun that may hold its figure ("leader with 136")


def _counted_text(question: str) -> str:
    match = re.search(r"\bhow (?:many|much)\s+([\w\s\"'-]+?)(?:\s+(?:are|is|will|must|should|to|by|in|under|per|did|"
                      r"do|does|have|has|had|were|was|can)\b|\?|$)", question, re.IGNORECASE)
    return match.group(1) if match else ""
