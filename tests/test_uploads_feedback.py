"""Upload names and feedback: no traversal, no clobbering, down-votes become golden-set candidates."""

import json

import pytest

from rag.documents import Answer
from rag.errors import LoadError
from rag.feedback import export_candidates, record
from rag.render import answer_html, passage_html
from rag.uploads import safe_name


@pytest.mark.parametrize("given, expected", [
    ("../../etc/passwd.md", "passwd.md"),
    ("/etc/shadow.txt", "shadow.txt"),
    ("C:\\\\Users\\\\x\\\\plan.PDF", "plan.pdf"),
    ("na\x00me.md", "name.md"),
    ("<script>.html", "script.html"),
    (".hidden.md", "hidden.md"),
])
def test_safe_names(given, expected):
    assert safe_name(given) == expected


def test_unsupported_upload_is_refused():
    with pytest.raises(LoadError, match="unsupported file type '.exe'"):
        safe_name("tool.exe")


def test_rendering_escapes_before_highlighting():
    text = 'Plan <script>alert(1)</script> and <img src=x onerror="alert(2)"> 100 datasets.\n\nNext **bold**'
    start = text.index("100")
    html = passage_html(text, start, start + len("100 datasets."))
    assert "<script>" not in html and "&lt;script&gt;" in html and "<img" not in html
    assert "<mark>100 datasets.</mark>" in html
    assert "\n\n" not in html  # no blank line: Markdown stays off inside the block
    assert answer_html("It is 100 [1].") == '<div class="answer">It is 100 <sup>[1]</sup>.</div>'


def test_feedback_round_trip(tmp_path):
    path = tmp_path / "feedback.jsonl"
    answer = Answer("100 datasets [1].", (), (), False)
    record(path, "How many datasets?", answer, "down")
    record(path, "How many scenarios?", answer, "up")
    record(path, "How many datasets?", answer, "down")
    with open(path, "a") as handle:
        handle.write('[1, 2]\n"just text"\n{"torn line')
    candidates, skipped = export_candidates(path)
    assert skipped == [f"{path}, line 4: not a feedback entry (an object with a text 'question'); skipped",
                       f"{path}, line 5: not a feedback entry (an object with a text 'question'); skipped",
                       f"{path}, line 6: not valid JSON (Unterminated string starting at); skipped"]
    assert candidates == [{"id": "fb001", "question": "How many datasets?", "reference_answer": "", "evidence": [],
                           "answerable": None, "key_facts": [], "tags": []}]
    assert json.loads(path.read_text().splitlines()[0])["vote"] == "down"
