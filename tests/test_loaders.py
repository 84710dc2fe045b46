"""Loaders: every supported format and encoding becomes clean text with its structure; bad files fail clearly."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest
from conftest import CORPUS

from rag.errors import LoadError
from rag.loaders import clean_text, detect_language, load_document


def make_pdf(path: Path, pages: list[str], *, encrypt: str | None = None) -> Path:
    from pypdf import PdfReader, PdfWriter
    from reportlab.pdfgen import canvas

    buffer = io.BytesIO()
    drawing = canvas.Canvas(buffer)
    for text in pages:
        y = 800
        for line in text.split("\n"):
            drawing.drawString(72, y, line)
            y -= 14
        drawing.showPage()
    drawing.save()
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(buffer.getvalue())))
    if encrypt:
        writer.encrypt(encrypt)
    with open(path, "wb") as handle:
        writer.write(handle)
    return path


def make_docx(path: Path) -> Path:
    import docx

    document = docx.Document()
    document.add_heading("Digital Upgrade Plan", level=0)
    document.add_heading("1 Targets", level=1)
    document.add_paragraph("By 2027, 500 typical application scenarios will be promoted.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Datasets"
    table.rows[0].cells[1].text = "100"
    document.add_heading("2 Measures", level=1)
    document.add_paragraph("SMEs receive computing power vouchers.")
    document.save(path)
    return path


def test_markdown_front_matter_gives_citation_fields_and_body_is_verbatim():
    path = CORPUS / "gmt-eight-ai-manufacturing-special-action.md"
    doc = load_document(path, root=CORPUS)
    assert doc.doc_id == "gmt-eight-ai-manufacturing-special-action"
    assert doc.publisher == "GMT Eight"
    assert doc.published == "2026-01-10"
    assert doc.language == "en"
    assert doc.title.startswith("Eight Departments Launch")
    assert "create 100 high‑quality industrial datasets" in doc.text
    assert not doc.text.startswith("---")


def test_markdown_inline_markup_is_dropped_but_its_words_and_structure_stay(tmp_path):
    path = tmp_path / "plan.md"
    path.write_text("# The **Plan**\n\n** The Strategic Goal:** By 2027, build 100 *high-quality* datasets, "
                    "says [MIIT](https://www.miit.gov.cn/n1146290/index.html).\n\n* item one\n* item `two`\n\n"
                    "| __Target__ | 2*3*4 |\n\nThe field data_set_id stays, and so do window.__xss = 1 and 2**3 = 8 "
                    "**bold**.\n", encoding="utf-8")
    doc = load_document(path, root=tmp_path)
    assert doc.title == "The Plan"
    assert "The Strategic Goal: By 2027, build 100 high-quality datasets, says MIIT.\n" in doc.text
    assert "* item one\n* item two" in doc.text and "| Target | 2*3*4 |" in doc.text
    assert "data_set_id stays, and so do window.__xss = 1 and 2**3 = 8 bold." in doc.text
    assert "miit.gov.cn" not in doc.text


def test_defaults_without_front_matter(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "plan notes.md"
    path.write_text("# Smart Factory Plan\n\nSome text about factories.\n", encoding="utf-8")
    doc = load_document(path, root=tmp_path)
    assert doc.title == "Smart Factory Plan"
    # The space cannot be in a doc_id: it becomes '-', and a hash of the path keeps it apart from `plan-notes.md`.
    assert re.fullmatch(r"sub/plan-notes\.md-[0-9a-f]{6}", doc.doc_id)
    assert doc.headings and doc.text[doc.headings[0].start:doc.headings[0].end] == "# Smart Factory Plan"


def test_title_falls_back_to_file_name(tmp_path):
    path = tmp_path / "ai_policy-2026.txt"
    path.write_text("Plain text without a heading.", encoding="utf-8")
    assert load_document(path).title == "ai policy 2026"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "gb18030", "big5"])
def test_text_encodings_are_detected(tmp_path, encoding):
    text = "第一条 为推动人工智能与制造业深度融合，制定本意见。到2027年，建设100个高质量工业数据集。" * 3
    if encoding == "big5":
        text = "第一條 為推動人工智慧與製造業深度融合，制定本意見。到2027年，建設100個高品質工業資料集。" * 3
    path = tmp_path / f"doc-{encoding}.txt"
    path.write_bytes(text.encode(encoding))
    doc = load_document(path)
    assert doc.text == clean_text(text)
    assert doc.language == "zh"


def test_language_detection_counts_cjk_against_latin_letters():
    assert detect_language("The plan sets 2027 targets for industrial datasets.") == "en"
    assert detect_language("到2027年，建设100个高质量工业数据集 (industrial datasets)。") == "zh"


def test_text_is_normalised_without_losing_words(tmp_path):
    path = tmp_path / "messy.txt"
    path.write_bytes("Cafe\u0301 line one.   \r\n\r\n\r\n\r\nline\x07 two\r\n".encode())
    assert load_document(path).text == "Café line one.\n\nline two"


def test_pdf_keeps_pages(tmp_path):
    path = make_pdf(
        tmp_path / "plan.pdf", ["1. Targets\nBy 2027, 100 datasets will be built.", "2. Measures\nSMEs get vouchers."]
    )
    doc = load_document(path)
    assert "100 datasets" in doc.text and "SMEs get vouchers." in doc.text
    assert len(doc.page_starts) == 2
    assert doc.text.index("SMEs") >= doc.page_starts[1] > doc.page_starts[0]


def test_html_drops_chrome_and_keeps_headings(tmp_path):
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>AI Plan</title><style>p{color:red}</style></head><body>"
        "<nav>Home | About</nav><header>Site header</header>"
        "<h1>Targets</h1><p>By 2027, <b>100</b> datasets.</p><script>alert(1)</script>"
        "<h2>Measures</h2><ul><li>Vouchers for SMEs</li><li>Open source</li></ul><footer>Copyright</footer>"
        "</body></html>", encoding="utf-8")
    doc = load_document(path)
    assert doc.title == "AI Plan"
    assert "By 2027, 100 datasets." in doc.text
    for dropped in ("Home | About", "Site header", "alert(1)", "Copyright", "color:red"):
        assert dropped not in doc.text
    assert [doc.text[h.start:h.end] for h in doc.headings] == ["Targets", "Measures"]
    assert "Vouchers for SMEs\n\nOpen source" in doc.text


def test_html_of_a_div_built_page_keeps_its_main_content_without_menus(tmp_path):
    path = tmp_path / "notice.html"
    path.write_text(
        "<html><head><title>Notice on Smart Factories</title></head><body>"
        "<div class='site-nav'>Home | Policies | Contact</div><div id='breadcrumb'>Home > Policies</div>"
        "<div class='sidebar'><p>Most read: Tax rules</p></div>"
        "<div role='main'><h1>Notice on Smart Factories</h1><p>Each province builds 20 smart factories.</p>"
        "<div class='menu-note'>Measures are listed below.</div></div>"
        "<div class='footer'>Copyright 2026 Ministry</div><div class='cookie-banner'>We use cookies</div>"
        "</body></html>", encoding="utf-8")
    doc = load_document(path)
    assert "Each province builds 20 smart factories." in doc.text
    assert "Measures are listed below." in doc.text  # a class that only starts with "menu" is content
    for dropped in ("Home | Policies", "Home > Policies", "Most read", "Copyright 2026", "cookies"):
        assert dropped not in doc.text
    assert [doc.text[h.start:h.end] for h in doc.headings] == ["Notice on Smart Factories"]


def test_html_without_a_main_element_keeps_its_whole_body(tmp_path):
    path = tmp_path / "two.html"
    path.write_text("<html><body><article><p>First article.</p></article><article><p>Second article.</p>"
                    "</article><p>Closing remarks.</p></body></html>", encoding="utf-8")
    text = load_document(path).text
    assert "First article." in text and "Second article." in text and "Closing remarks." in text


def test_docx_headings_and_tables(tmp_path):
    doc = load_document(make_docx(tmp_path / "plan.docx"))
    assert doc.title == "Digital Upgrade Plan"
    assert [(doc.text[h.start:h.end], h.level) for h in doc.headings] == [
        ("Digital Upgrade Plan", 1), ("1 Targets", 2), ("2 Measures", 2)]
    assert "Datasets | 100" in doc.text


@pytest.mark.parametrize("name, content, reason", [
    ("empty.txt", b"", "is empty"),
    ("blank.md", b"   \n\n  ", "is empty"),
    ("binary.txt", bytes(range(256)) * 40, "binary"),
    ("notes.xyz", b"hello", "unsupported file type '.xyz'"),
    ("broken.pdf", b"%PDF-1.4\n1 0 obj<<>>\nthis is not a pdf", "PDF is damaged"),
    ("broken.docx", b"PK\x03\x04 not really a zip", "not a valid .docx"),
    ("bad-front.md", b"---\ntitle: [unclosed\n---\nBody", "front matter does not parse"),
    ("bad-date.md", b"---\npublished: last year\n---\nBody", "'published' must be a real ISO date like 2026-01-09"),
    ("bad-id.md", b"---\ndoc_id: ../../etc/passwd\n---\nBody", "doc_id '../../etc/passwd' is not allowed"),
])
def test_bad_files_fail_with_the_file_and_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LoadError) as failure:
        load_document(path)
    assert str(path) in str(failure.value)
    assert reason in str(failure.value)


def test_encrypted_pdf(tmp_path):
    path = make_pdf(tmp_path / "secret.pdf", ["Confidential targets"], encrypt="hunter2")
    with pytest.raises(LoadError, match="encrypted.*qpdf --decrypt"):
        load_document(path)


def test_pdf_without_text_layer(tmp_path):
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    path = tmp_path / "scan.pdf"
    with open(path, "wb") as handle:
        writer.write(handle)
    with pytest.raises(LoadError, match="no text layer.*OCR"):
        load_document(path)


def test_file_over_the_size_limit(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("word " * 300_000)
    with pytest.raises(LoadError, match=r"is 1\.5 MB, over the limit RAG_MAX_FILE_MB=1"):
        load_document(path, max_file_mb=1)


def test_missing_file_and_symlink_loop(tmp_path):
    with pytest.raises(LoadError, match="does not exist"):
        load_document(tmp_path / "gone.txt")
    loop = tmp_path / "loop.txt"
    os.symlink(loop, loop)
    with pytest.raises(LoadError, match="symlink loop"):
        load_document(loop)


def test_unreadable_file(tmp_path):
    path = tmp_path / "locked.txt"
    path.write_text("secret")
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("running as root: file permissions do not stop this process")
    with pytest.raises(LoadError, match="permission denied"):
        load_document(path)


def test_a_folder_named_like_a_file(tmp_path):
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(LoadError, match="is not a regular file"):
        load_document(tmp_path / "folder.txt")


def test_doc_ids_come_from_the_whole_relative_path_and_differ_when_names_would_collide(tmp_path, monkeypatch):
    for name in ("a b.txt", "a-b.txt", "2026/report.txt", "2025/report.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(f"Text of {name}.", encoding="utf-8")
    ids = {name: load_document(tmp_path / name, root=tmp_path).doc_id
           for name in ("a b.txt", "a-b.txt", "2026/report.txt", "2025/report.txt")}
    assert ids["a-b.txt"] == "a-b.txt" and ids["a b.txt"].startswith("a-b.txt-") and len(set(ids.values())) == 4
    assert ids["2026/report.txt"] == "2026/report.txt"
    monkeypatch.chdir(tmp_path)  # files given alone: their path below the working folder
    assert load_document(Path("2025/report.txt")).doc_id == "2025/report.txt"


def test_html_with_control_characters_is_read(tmp_path):
    path = tmp_path / "page.html"
    path.write_text("<html><body><h2>Targets&#1;</h2><p>Build&#2; 100 datasets&#3; by 2027.&#1;</p></body></html>",
                    encoding="utf-8")
    doc = load_document(path)
    assert doc.text == "Targets\n\nBuild 100 datasets by 2027."
    assert [doc.text[h.start:h.end] for h in doc.headings] == ["Targets"]


def test_a_table_nested_in_a_docx_table_keeps_its_text(tmp_path):
    import docx

    document = docx.Document()
    outer = document.add_table(rows=1, cols=2)
    outer.rows[0].cells[0].text = "Targets"
    inner = outer.rows[0].cells[1].add_table(rows=2, cols=2)
    for row, (what, count) in enumerate([("Datasets", "100"), ("Scenarios", "500")]):
        inner.rows[row].cells[0].text, inner.rows[row].cells[1].text = what, count
    document.save(tmp_path / "nested.docx")
    assert "Targets | Datasets | 100; Scenarios | 500" in load_document(tmp_path / "nested.docx").text


@pytest.mark.parametrize("published, reason", [
    ('"2026-13-45"', "month must be in 1..12"),
    ("2026-02-30", "day is out of range for month"),
    ("2026-13", "month must be in 1..12"),
])
def test_an_invalid_date_names_the_field_and_the_file(tmp_path, published, reason):
    path = tmp_path / "dated.md"
    path.write_text(f"---\npublished: {published}\n---\nBody text.", encoding="utf-8")
    with pytest.raises(LoadError) as failure:
        load_document(path)
    assert f"{path}: front matter field 'published' must be a real ISO date" in str(failure.value)
    assert reason in str(failure.value)


@pytest.mark.parametrize(
    "written, stored", [("zh-CN", "zh"), ("ZH", "zh"), ("zh_Hans", "zh"), ("en-US", "en"), ("EN", "en")]
)
def test_front_matter_languages_are_normalised(tmp_path, written, stored):
    path = tmp_path / "lang.md"
    path.write_text(f"---\nlanguage: {written}\npublished: 2026-02\n---\nBody text.", encoding="utf-8")
    doc = load_document(path)
    assert doc.language == stored and doc.published == "2026-02"


def test_a_language_other_than_en_or_zh_is_refused(tmp_path):
    path = tmp_path / "lang.md"
    path.write_text("---\nlanguage: klingon\n---\nBody text.", encoding="utf-8")
    with pytest.raises(LoadError, match=r"lang.md: front matter field 'language' must be en or zh .* got 'klingon'"):
        load_document(path)


def test_a_yaml_nesting_bomb_gets_a_clear_message(tmp_path):
    path = tmp_path / "bomb.md"
    path.write_text("---\ntitle: " + "[" * 100_000 + "]" * 100_000 + "\n---\nBody", encoding="utf-8")
    with pytest.raises(LoadError, match=r"bomb.md: the YAML front matter is nested too deeply to read"):
        load_document(path)


def test_zero_width_characters_inside_numbers_are_removed():
    text = clean_text(
        "Build 1\u2060000 datasets, 2\u00ad027 targets, 3\u200d5 % and 4\u200c.5 points; 👩\u200d💻 stays."
    )
    assert text == "Build 1000 datasets, 2027 targets, 35 % and 4.5 points; 👩\u200d💻 stays."
