"""What a question asks: its normal form, its answer type, the terms an answer cannot do without, follow-ups."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from rag.errors import QuestionError
from rag.lexical import STOP_WORDS, has_cjk, tokenize
from rag.safety import injection_rules

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
# A figure an answer must repeat; not an ordinal or a decade ("15th century", "the 70's", "1980s"), which the
# text may write otherwise ("fifteenth", "1970s").
_NUMBER = re.compile(r"\d[\d,.]*(?![\d,.]*(?:st|nd|rd|th|s|'s|’s)\b)")
_INTERROGATIVES = frozenset(
    "what which who whom whose when where why how many much list name tell give describe explain "
    "according say says said does do did".split()
)
# Words any question about a document may use: no help in finding the answer, but kept in follow-ups.
_QUESTION_WORDS = _INTERROGATIVES | frozenset("document documents text plan policy article says state states".split())
# A follow-up leans on the previous question: it opens with "and"/"what about", or a pronoun or "the same" stands
# for something named before. Anything else is asked as it stands.
_FOLLOW_UP = re.compile(
    r"^(and|also|what about|how about|and what|and how|what of|same for|then)\b|\b(it|its|they|them|their|"
    r"he|she|his|her|him|this one|that one|the same|these|those)\b|^(它|其|该|这|那|那么|还有|同样)", re.IGNORECASE)
# "this"/"that" followed by a noun ("this plan") still names its subject; alone ("what does this mean?") it leans back.
_BARE_DEMONSTRATIVE = re.compile(r"\b(this|that)\s*(\?|$|\b(?:is|was|mean|means|cover|covers|say|says|include|"
                                 r"includes)\b)",
                                 re.IGNORECASE)

TYPES = ("numeric", "date", "who", "list", "definition", "condition", "summary", "other")
_TYPE_PATTERNS = [
    # "When must X notify ..." asks for the circumstances, not a date: checked before the date pattern.
    (
        "condition",
        re.compile(
            r"\bin (what|which) (circumstances?|cases?|situations?)\b|\bunder (what|which) "
            r"(conditions?|circumstances?)\b|\bwhen (must|should|shall|may|can|could|would)\b(?!.*"
            r"\b(date|year|month|deadline|by when)\b)|\bwhen (is|are) .{0,60}\b(required|obliged|"
            r"permitted|allowed|expected)\b|\bwhat (conditions|circumstances|requirements) "
            r"(must|should|apply|are)\b|\bif (a|an|the)\b.*\bwhat\b|在什么情况下|什么条件",
            re.IGNORECASE,
        ),
    ),
    (
        "summary",
        re.compile(
            r"\bsummar(y|ise|ize|ising|izing)\b|\b(give|provide) (me )?an? overview\b|\bmain points\b|"
            r"\bin (brief|a nutshell)\b|\bwhat is (this|the) (document|plan|policy|article|text|report) "
            r"about\b|\bkey takeaways\b|概括|总结|概述|主要内容",
            re.IGNORECASE,
        ),
    ),
    (
        "definition",
        re.compile(
            r"^\s*(what is|what's|what are)\s+(an? |the term |"
            r"meant by )?(?!the\b)[\w\"'“”‘’()\- ]{2,60}\??$|^\s*define\b|"
            r"\bwhat does [\w\"'“”‘’()\- ]{2,60} (mean|stand for|refer to)\b|\b(meaning|"
            r"definition) of\b|\bwhat is meant by\b|^什么是|是什么意思|的定义|指的是什么|是指什么",
            re.IGNORECASE,
        ),
    ),
    (
        "numeric",
        re.compile(
            r"\bhow (many|much|old|long|far|large)\b|\bwhat (number|percentage|share|proportion|"
            r"amount)\b|\bwhat (is|are|was|were) the (maximum|minimum|total|average|median)\b|\bin percent\b|"
            r"多少|几个|几家|几项|比例|百分之|多大|多久|多长",
            re.IGNORECASE,
        ),
    ),
    # "when" asks for a date as the question word ("When was ...", "Since when ..."), not inside a clause
    # ("How old was he when he played", "When a Trustee holds property ..., what must it do?").
    (
        "date",
        re.compile(
            r"^\W*(?:and |so |since |until |by )?when (?:did|was|were|is|are|will|does|do|has|have|had|"
            r"would|could)\b|\bwhat (date|day|year)\b|\bwhich (date|day|year)\b|\bby what (date|year)\b|"
            r"\bin what year\b|何时|什么时候|哪一年|哪年|哪一天|日期",
            re.IGNORECASE,
        ),
    ),
    (
        "who",
        re.compile(
            r"\bwho\b|\bwhom\b|\bwhich (ministr|department|bod|agenc|organi|institution|authorit|compan|"
            r"enterprise|universit|media|newspaper|outlet|person|expert|professor|government)|"
            r"谁|哪些部门|哪个部门|哪家|哪位|哪些机构",
            re.IGNORECASE,
        ),
    ),
    (
        "list",
        re.compile(
            r"\bin what order\b|\bwhat (steps|stages|phases)\b|\bwhat are\b|\bwhich\b.*\b(are|were)\b|"
            r"\blist\b|\bname the\b|\bwhat (kinds|types|areas|sectors|steps|measures|pillars|elements|"
            r"targets)\b|\bwhich (two|three|four|five|six)\b|哪些",
            re.IGNORECASE,
        ),
    ),
]
_UNIT_WORDS = {
    "percent": re.compile(r"%|percent|per cent|百分"),
    "currency": re.compile(r"yuan|rmb|¥|\$|usd|dollars?|euros?|money|monetary|budget|funding amount|worth|price|"
                           r"cost of|元|资金"),
}
# A question for a sum asks for it ("What is the price of ...", "How much money ..."); one that only names a
# price ("When may a Stabilisation Manager act on the market price?") does not.
_MONEY_QUESTION = re.compile(r"\b(?:monetary value|how much money)\b|\bwhat (?:is|was|are|were) (?:the|its|their) "
                             r"(?:\w+\s+)?(?:worth|price|budget|cost)\b", re.IGNORECASE)
# "Which province / In which city / What company ...": the answer is a named instance of the category.
_ENTITY_QUESTION = re.compile(r"\b(?:which|what)\s+(?:[\w-]+\s+){0,2}?(city|cities|towns?|villages?|count(?:y|ies)|"
                              r"districts?|ports?|province|provinces|region|regions|"
                              r"country|countries|member states|company|companies|firm|firms|chipmakers?|"
                              r"manufacturers?|universit(?:y|ies)|agenc(?:y|ies)|ministry|ministries|law|laws|act|"
                              r"regulation|regulations|rules|licen[cs]e|banks?|courts?|teams?|organi[sz]ations?|"
                              r"partners?|institutions?)\b", re.IGNORECASE)
# The same asked in Chinese ("哪些省份", "哪家公司", "什么大学"), by the English word of its category.
_CHINESE_ENTITY_QUESTION = re.compile(r"(?:哪(?:个|座|家|支|所|些|一个|一座|一家|一支|一所)?|什么)"
                                      r"(城市|省份|省|国家|公司|车企|大学|学校|球队|法律|法案|法规|银行|机构|组织)")
_CHINESE_CATEGORIES = {"城市": "city", "省份": "province", "省": "province", "国家": "country", "公司": "company",
                       "车企": "company", "大学": "university", "学校": "university", "球队": "team", "法律": "law",
                       "法案": "law", "法规": "regulation", "银行": "bank", "机构": "institution",
                       "组织": "organization"}
_PERSON_QUESTION = re.compile(r"\bwho (is|was) the\b|\bwhich person\b|\bname of the (minister|director|head)\b|"
                              r"\b(minister|chairman|director|head|official) who\b|哪位", re.IGNORECASE)


@dataclass(frozen=True)
class Question:
    text: str  # normalised, as asked
    standalone: str  # rewritten with the conversation's context (equal to text when not a follow-up)
    kind: str  # one of TYPES
    terms: tuple[str, ...]  # BM25 tokens of the content words
    required: tuple[str, ...]  # numbers and names an answer must contain to be about this question
    unit: str | None  # "percent" / "currency" when a numeric question asks for one
    head_noun: str | None  # stem of what "how many ..." counts
    cjk: bool
    modifiers: tuple[str, ...] = ()  # stems qualifying the counted noun ("little giant" enterprises)
    wants_person: bool = False
    injection: tuple[str, ...] = ()  # safety rules the question trips: answered as a plain question, never obeyed
    wants_name_of: str | None = None  # "city" for "In which city ...": the answer must name one
    one_word_names: tuple[str, ...] = ()  # "Zhongguancun": a name not required of the documents (see the function)

    @property
    def strict_type(self) -> bool:
        """A count, a date or a person is asked: a sentence without one does not answer."""
        return self.kind in ("numeric", "date") or self.wants_person


def normalise(question: str, max_chars: int) -> str:
    """NFKC, no control or direction characters, single spaces; empty or over-long is a QuestionError."""
    text = _CONTROL.sub(" ", unicodedata.normalize("NFKC", question))
    text = " ".join(text.encode("utf-8", "replace").decode("utf-8").split())
    if not re.search(r"[^\W_]", text):
        raise QuestionError("The question is empty (or only punctuation): type a question about the documents")
    if len(text) > max_chars:
        raise QuestionError(
            f"The question is {len(text):,} characters long, over the limit of {max_chars:,} (RAG_MAX_QUESTION_CHARS); "
            "shorten it"
        )
    return text


def analyse(question: str, history: tuple[str, ...] = (), max_chars: int = 2000) -> Question:
    text = normalise(question, max_chars)
    standalone = rewrite_follow_up(text, history)
    kind = question_type(standalone)
    if _MONEY_QUESTION.search(standalone):
        kind = "numeric"
    lowered = standalone.lower()
    unit = (
        next((name for name, pattern in _UNIT_WORDS.items() if pattern.search(lowered)), None)
        if kind == "numeric"
        else None
    )
    counted = _counted_phrase(standalone) if kind == "numeric" else []
    if re.search(r"\bhow (many|much)\s+[\w\s-]*\b(or|and)\b", standalone, re.IGNORECASE):
        counted = counted[-1:]  # "ministries or departments": alternatives, not qualifiers
    return Question(text, standalone, kind, tuple(content_terms(standalone)), tuple(required_terms(text)), unit,
                    counted[-1] if counted else None, has_cjk(text), tuple(counted[:-1]),
                    bool(_PERSON_QUESTION.search(standalone)), injection_rules(text),
                    _category_asked(standalone), tuple(one_word_names(text)))


def _category_asked(text: str) -> str | None:
    """What kind of name the question asks for ("city" for "In which city ..." and for "在哪个城市"), if any: the
    category follows the question word, perhaps after a qualifier ("Which Florida city"), not after a verb or an
    article ("What should a company do", "What did Newcastle University win"), and is not half of a compound
    ("What country-wide system")."""
    for asked in _ENTITY_QUESTION.finditer(text):
        between = asked.group(0).split()[1:-1]
        if not any(w.lower() in STOP_WORDS for w in between) and not text[asked.end():].startswith("-"):
            return asked.group(1).lower()
    if chinese := _CHINESE_ENTITY_QUESTION.search(text):
        return _CHINESE_CATEGORIES[chinese.group(1)]
    return None


def question_type(text: str) -> str:
    for kind, pattern in _TYPE_PATTERNS:
        if pattern.search(text):
            return kind
    return "other"


def content_terms(text: str) -> list[str]:
    """BM25 tokens of the question minus question words: what an answer should talk about."""
    question_stems = set(tokenize(" ".join(_QUESTION_WORDS)))
    return [t for t in dict.fromkeys(tokenize(text)) if t not in question_stems]


_YEAR_NUMBER = re.compile(r"(?:1[5-9]|20)\d\d")
_LATIN_RUN = re.compile(r"[A-Za-z][A-Za-z0-9.\-]*(?:\s+[A-Za-z][A-Za-z0-9.\-]*)*")


def required_terms(text: str) -> list[str]:
    """Numbers (years, figures) and capitalised names inside the question: without them a passage is off topic.
    Of a Chinese question its years and the names it writes in Latin letters ("BSkyB", "Sky Digital"), which
    English writes alike; its other numbers are written otherwise ("第 49 届" is "XLIX", "70 年代" "the 1970s")."""
    found = [n.rstrip(".,") for n in _NUMBER.findall(text)]
    if has_cjk(text):
        latin = (run.strip(" .-") for run in _LATIN_RUN.findall(text))
        return list(dict.fromkeys([n for n in found if _YEAR_NUMBER.fullmatch(n)] + [n for n in latin if len(n) > 1]))
    for match in re.finditer(r"(?<![.?!]\s)(?<!^)\b([A-Z][a-z]+(?:\s+[A-Z][a-z]+)+)\b", text):
        words = match.group(1).split()
        if words[0].lower() not in _QUESTION_WORDS and words[0].lower() not in STOP_WORDS:
            found.append(match.group(1))
    return list(dict.fromkeys(found))


def one_word_names(text: str) -> list[str]:
    """Capitalised words of an English question that stand alone, inside a sentence, and are no common English
    word ("Zhongguancun", "Jacksonville"). Unlike the names of `required_terms` the documents need not hold them
    (questions misspell them, or write "Indian" of a text that says "India"); but passages that name one must give
    what a strict question asks for (rag.abstention.subject_without_typed_answer)."""
    if has_cjk(text):
        return []
    from rag.translation import common_english_words  # the word list is read only when a question needs it

    words = list(_WORD_AT.finditer(text))
    found = []
    for n, match in enumerate(words):
        word = match.group()
        in_run = any(0 <= m < len(words) and words[m].group()[0].isupper()
                     and not text[min(words[m].end(), match.end()):max(words[m].start(), match.start())].strip()
                     for m in (n - 1, n + 1))  # "Lady Gaga" is a name of required_terms
        opens_sentence = n == 0 or re.search(r"[.?!:]\s*$", text[words[n - 1].end():match.start()])
        if (word[0].isupper() and word[1:].islower() and not in_run and not opens_sentence
                and word.lower() not in common_english_words() and word.lower() not in STOP_WORDS):
            found.append(word)
    return list(dict.fromkeys(found))


_WORD_AT = re.compile(r"[^\W\d_]+")


def _counted_phrase(text: str) -> list[str]:
    """'How many humanoid robots are to be ...' -> stems ['humanoid', 'robot'] (the last is the counted noun);
    nothing for a share or a change ("How much of the effect ...", "How much has it changed")."""
    if re.search(r"\bhow (?:many|much)\s+(?:of|has|have|had|is|are|was|were|did|do|does|will|would|can|could)\b",
                 text, re.IGNORECASE):
        return []
    match = re.search(r"\bhow (?:many|much)\s+((?:[\w-]+\s+){0,4}?[\w-]+)\s+(?:are|is|will|would|must|should|does|do|"
                      r"did|can|have|has|to|by|in|under|of|for|per|were|was|does)\b", text, re.IGNORECASE)
    if not match:
        match = re.search(r"\bhow (?:many|much)\s+((?:[\w-]+\s*){1,3})", text, re.IGNORECASE)
    return tokenize(match.group(1)) if match else []


def needs_context(question: str) -> bool:
    """A question that cannot stand alone: it leans on an earlier one (pronoun, "and ...", "what about ..."),
    or names nothing of its own ("and by 2030?")."""
    leans_back = _FOLLOW_UP.search(question) or _BARE_DEMONSTRATIVE.search(question)
    return bool(leans_back) or not content_terms(question)


def rewrite_follow_up(question: str, history: tuple[str, ...]) -> str:
    """Without an LLM: carry the previous question's key terms into a follow-up that cannot stand alone; a
    question that stands alone is asked as it is."""
    if not history or not needs_context(question):
        return question
    previous = history[-1]
    own_terms = content_terms(question)
    carried = [w for w in re.findall(r"[\w-]+", previous)
               if w.lower() not in _INTERROGATIVES and w.lower() not in STOP_WORDS and not _FOLLOW_UP.fullmatch(w)
               and tokenize(w) and tokenize(w)[0] not in own_terms]
    if not carried:
        return question
    kind = question_type(question)
    previous_kind = question_type(previous)
    opener = ""
    if kind == "other" and previous_kind != "other":  # "and for SMEs?" keeps asking what was asked
        asked_as = re.match(r"^\s*(how many|how much|when|who|which|what)\b", previous, re.IGNORECASE)
        opener = f"{asked_as.group(1)} " if asked_as else ""
    return f"{opener}{question.rstrip('?？ ')} ({' '.join(dict.fromkeys(carried))})?"


_ACRONYM = re.compile(r"\b([A-Z]{2,8})s?\b")


def expand_acronyms(question: str, texts: list[str]) -> str:
    """The question with each acronym's spelled-out form from the texts added ("What must SMEs do?" and a passage
    saying "Small and Medium Enterprises (SMEs)" -> "What must SMEs do? (Small and Medium Enterprises)"), so that
    passages that spell it out are found too. Unchanged when no text defines its acronyms."""
    found = []
    for acronym in dict.fromkeys(m.group(1) for m in _ACRONYM.finditer(question)):
        for text in texts:
            expansion = _spelled_out(acronym, text)
            if expansion and expansion.lower() not in question.lower():
                found.append(expansion)
                break
    return f"{question} ({'; '.join(found)})" if found else question


def _spelled_out(acronym: str, text: str) -> str | None:
    """The words before "(ACRONYM)" whose initials spell it, stop words allowed between them."""
    for match in re.finditer(rf"\(\s*{acronym}s?\s*\)", text):
        words = re.findall(r"[\w'-]+", text[max(0, match.start() - 120):match.start()])
        letters, taken = list(acronym.lower()), []
        for word in reversed(words):
            if not letters:
                break
            if word.lower() in STOP_WORDS or word.lower() in ("&",):
                taken.append(word)
                continue
            if word[0].lower() != letters[-1]:
                break
            letters.pop()
            taken.append(word)
        if not letters:
            phrase = " ".join(reversed(taken)).strip()
            while phrase.split()[0].lower() in STOP_WORDS:
                phrase = phrase.split(" ", 1)[1]
            return phrase
    return None
