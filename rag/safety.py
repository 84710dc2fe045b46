"""Input-side filtering: questions that try to instruct the assistant, documents that address it.

The rules are plain regular expressions, listed here so that anyone can read what is caught. A caught
question is still answered, from the documents, as a plain question; nothing in it is obeyed. A document
whose text addresses the assistant is flagged at ingest (`rag docs` shows it) and its passages reach an LLM
marked as such, inside the quoted-data frame every passage gets.
"""

from __future__ import annotations

import re

INJECTION_RULES: tuple[tuple[str, re.Pattern], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        (
            "override-instructions",
            r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(previous|prior|above|"
            r"earlier|all|your|the|any)\b.{0,20}\b(instructions?|rules?|prompts?|guidelines?|"
            r"directions?)\b",
        ),
        (
            "reveal-prompt",
            r"\b(print|reveal|show|repeat|output|tell me|display|leak)\b.{0,30}\b(system|hidden|initial|"
            r"original)\s+(prompt|instructions?|message)",
        ),
        ("role-play", r"\b(you are now|from now on you are|act as|pretend (to be|you are)|roleplay as|role-play as)\b"),
        ("jailbreak", r"\b(jailbreak|DAN mode|developer mode|do anything now|no restrictions|unfiltered)\b"),
        (
            "override-instructions-zh",
            r"(忽略|无视|忘记|忘掉|不要理会).{0,10}(之前|以上|前面|先前|所有|全部)?.{0,6}(指令|指示|说明|规则|提示)",
        ),
        ("reveal-prompt-zh", r"(输出|显示|泄露|告诉我|打印|重复).{0,10}(系统提示|系统指令|提示词|初始指令)"),
        ("role-play-zh", r"(你现在是|从现在起你是|扮演|假装你是|假装成)"),
    )
)

_ADDRESSES_ASSISTANT = re.compile(
    r"\b(AI assistant|assistant|chatbot|language model|LLM|ChatGPT|AI model)\s*[:,]\s*(always|never|ignore|disregard|"
    r"answer|respond|reply|say|you must|you should)|"
    r"\b(always|you must|you should)\s+(answer|respond|reply|say)\b.{0,40}\b(regardless|whatever|no matter)|"
    r"\b(ignore|disregard)\b.{0,40}\b(instructions?|the question|the documents|other documents)\b|"
    r"(AI助手|人工智能助手|助手)\s*[:：，,]\s*(总是|永远|忽略|回答)|(忽略|无视).{0,10}(指令|问题|其他文件)",
    re.IGNORECASE,
)
ADDRESSES_ASSISTANT = "addresses-assistant"


def injection_rules(question: str) -> tuple[str, ...]:
    """Names of the rules a question trips (empty for an ordinary question)."""
    return tuple(name for name, pattern in INJECTION_RULES if pattern.search(question))


def addresses_assistant(text: str) -> bool:
    """True when a document's text speaks to the assistant instead of to its readers."""
    return bool(_ADDRESSES_ASSISTANT.search(text))
