"""Turn files into `Document`s: detect the encoding, keep the structure (headings, pages), never crash.

Every failure is a `LoadError` whose message names the file and says what to do about it.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from rag.documents import Document, Heading
from rag.errors import FileTooLargeError, LoadError, UnsupportedFileError
from rag.headings import MD_HEADING, find_text_headings
from rag.safety import ADDRESSES_ASSISTANT, addresses_assistant

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".pdf", ".html", ".htm", ".docx")
# Unzipped size allowed per zipped MB of a .docx before it counts as a zip bomb.
DOCX_MAX_EXPANSION = 100
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\ufeff]")
# Invisible characters that split a number ("1\u2060000", "2\u00ad027") for the tokenizers and the quotes: soft
# hyphen, zero-width non-joiner and joiner, word joiner. Elsewhere (emoji, Indic scripts) they mean something.
_INSIDE_NUMBER = re.compile(r"(?<=[\d.,])[\u00ad\u200c\u200d\u2060]+(?=[\d.,])")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_DOC_ID = re.compile(r"[\w][\w.\-/]{0,199}")  # fullmatch: "$" would let a final newline through
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n---[ \t]*\n", re.DOTALL)
FRONT_MATTER_FIELDS = ("title", "publisher", "published", "source", "language", "doc_id")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def derive_doc_id(path: Path, root: Path | None) -> str:
    """The path relative to the ingest root (or, for a file given alone, to the working folder when it lies
    there) as a stable id (`sub/file.md`). Characters a doc_id cannot hold become '-', and then a short hash
    of the path is added, so `a b.txt` and `a-b.txt` get different ids."""
    base = Path(root) if root else Path.cwd()
    try:
        relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(base)).as_posix()
    except ValueError:
        relative = path.name
    doc_id = re.sub(r"[^\w.\-/]", "-", relative).lstrip("./-") or "document"
    if doc_id != relative:
        doc_id += "-" + hashlib.sha256(relative.encode("utf-8")).hexdigest()[:6]
    return doc_id[-200:].lstrip("./-") if len(doc_id) > 200 else doc_id


def within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def stored_path(path: Path, root: Path | None) -> str:
    """Where the store records a file: its real path; for a link out of its ingest root (allowed by
    RAG_ALLOW_LINKS_OUT), the link's own, so `--prune` of that root drops the document once the link is gone."""
    real = os.path.realpath(path)
    if root is not None and not within(real, os.path.realpath(root)):
        return os.path.abspath(path)
    return real


def check_inside_root(path: Path, root: Path | None, allow_links_out: bool) -> None:
    """Refuse a file that a symlink leads out of the folder being ingested (to /etc/passwd, say)."""
    if root is None or allow_links_out:
        return
    real = os.path.realpath(path)
    if not within(real, os.path.realpath(root)):
        raise LoadError(f"{path}: is a symlink to {real}, outside the ingested folder {root}; ingest that file "
                        "by its own path, or set RAG_ALLOW_LINKS_OUT=true to follow such links")


def validate_doc_id(doc_id: str, where: str) -> str:
    if not _DOC_ID.fullmatch(doc_id) or any(part in ("", ".", "..") for part in doc_id.split("/")):
        raise LoadError(
            f"{where}: doc_id {doc_id!r} is not allowed: use letters, digits, '.', '-', '_' and '/' "
            "(no empty, '.' or '..' parts, at most 200 characters)"
        )
    return doc_id


def clean_text(text: str) -> str:
    """NFC, one newline style, no control characters, no trailing spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _INSIDE_NUMBER.sub("", _CONTROL.sub("", text))
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def plain_markdown(text: str) -> str:
    """Markdown without its inline markup, which a quoted answer should not carry and a search should not
    match: a link or an image by its text, emphasis and code by what they mark. Headings, list bullets, tables
    and a word_with_underscores stay as they are."""
    text = _MD_LINK.sub(r"\1", text)
    text = _MD_STRONG.sub(lambda m: m.group(2).strip(), text)  # "** The Goal:**" too, as web pages write it
    text = _MD_EMPHASIS.sub(r"\2", text)
    return _MD_CODE.sub(r"\1", text)


_MD_LINK = re.compile(r"!?\[([^\]\n]*)\]\((?:[^()\s]|\([^()\s]*\))*(?:\s+\"[^\"\n]*\")?\)")
# A marker opens after a space or punctuation other than a dot and closes before one: "window.__name__" and
# "2**3" are not emphasis.
_MD_STRONG = re.compile(r"(?<![\w.*])(\*\*|__)([^\n]+?)\1(?![\w*])")
_MD_EMPHASIS = re.compile(r"(?<![\w.*])([*_])(?=[^\s*_])([^\n]*?[^\s*_])\1(?![\w*])")
_MD_CODE = re.compile(r"`([^`\n]+)`")


def detect_language(text: str) -> str:
    """`zh` when CJK characters make up at least 30 % of the letters, else `en`."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    return "zh" if cjk and cjk >= 0.3 * (cjk + latin) else "en"


def decode_bytes(raw: bytes, where: str) -> str:
    """UTF-8 (BOM or not), UTF-16/32 with BOM, else whatever charset-normalizer finds (GB18030, Big5, ...)."""
    for bom, encoding in (
        (b"\xef\xbb\xbf", "utf-8-sig"),
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if raw.startswith(bom):
            return raw.decode(encoding, errors="replace")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(raw[: 4 << 20]).best()
        if best is None:
            raise LoadError(
                f"{where}: looks like a binary file, not text; convert it to .txt, .md, .pdf, .html or .docx"
            ) from None
        text = raw.decode(best.encoding, errors="replace")
    if "\x00" in text[:65536] or _control_share(text[:65536]) > 0.05:
        raise LoadError(f"{where}: looks like a binary file, not text; convert it to .txt, .md, .pdf, .html or .docx")
    return text


def _control_share(sample: str) -> float:
    controls = sum(1 for ch in sample if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t\f")
    return controls / max(1, len(sample))


@dataclass(frozen=True)
class _Part:
    text: str
    heading_level: int = 0
    page: int | None = None


def _assemble(parts: list[_Part]) -> tuple[str, tuple[Heading, ...], tuple[int, ...]]:
    """Join cleaned parts with blank lines, remembering where headings and pages start."""
    pieces: list[str] = []
    headings: list[Heading] = []
    page_starts: list[int] = []
    offset = 0
    last_page = None
    for part in parts:
        text = clean_text(part.text)
        if part.page is not None and part.page != last_page:
            page_starts.extend([offset] * (part.page - len(page_starts)))
            last_page = part.page
        if not text.strip():
            continue
        if pieces:
            offset += 2
        if part.heading_level:
            headings.append(Heading(offset, offset + len(text.split("\n")[0]), part.heading_level))
        pieces.append(text)
        offset += len(text)
    return "\n\n".join(pieces), tuple(headings), tuple(page_starts)


def _read_front_matter(text: str, where: str) -> tuple[dict[str, str], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        # BaseLoader: every scalar stays the text written, so a bad date is reported with its field and file
        # here rather than as a bare "day is out of range for month" from YAML's own date parsing.
        data = yaml.load(match.group(1), Loader=yaml.BaseLoader) or {}
    except yaml.YAMLError as exc:
        raise LoadError(
            f"{where}: the YAML front matter does not parse ({str(exc).splitlines()[0]}); fix it or remove it"
        ) from None
    except RecursionError:
        raise LoadError(
            f"{where}: the YAML front matter is nested too deeply to read; front matter holds "
            f"plain fields ({', '.join(FRONT_MATTER_FIELDS)})"
        ) from None
    if not isinstance(data, dict):
        raise LoadError(f"{where}: the front matter must be a mapping of fields, got {type(data).__name__}")
    fields = {}
    for key in FRONT_MATTER_FIELDS:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise LoadError(f"{where}: front matter field {key!r} must be text, got {type(value).__name__}")
        fields[key] = value.strip()
    if "published" in fields:
        fields["published"] = _checked_date(fields["published"], where)
    if "language" in fields:
        fields["language"] = _checked_language(fields["language"], where)
    return fields, text[match.end():]


def _checked_date(value: str, where: str) -> str:
    """An ISO date, year-month or year that exists (2026-02-30 and 2026-13 do not)."""
    shape = re.fullmatch(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", value)
    try:
        if not shape:
            raise ValueError("not of the form YYYY-MM-DD")
        year, month, day = shape.groups()
        dt.date(int(year), int(month or 1), int(day or 1))
    except ValueError as exc:
        raise LoadError(f"{where}: front matter field 'published' must be a real ISO date like 2026-01-09 "
                        f"(or 2026-01, or 2026), got {value!r} ({exc})") from None
    return value


def _checked_language(value: str, where: str) -> str:
    """`en` or `zh` from a tag such as `zh-CN`, `ZH` or `en_US`: retrieval compares with those two."""
    primary = re.split(r"[-_]", value.strip().lower())[0]
    if primary not in ("en", "zh"):
        raise LoadError(f"{where}: front matter field 'language' must be en or zh (a tag such as zh-CN or en-US "
                        f"will do), got {value!r}; leave it out to have the language detected")
    return primary


def _load_text(path: Path, raw: bytes, where: str) -> tuple[dict, str, tuple, tuple]:
    text = decode_bytes(raw, where)
    meta: dict[str, str] = {}
    if path.suffix.lower() in (".md", ".markdown"):
        meta, text = _read_front_matter(text.lstrip("\ufeff"), where)
        text = plain_markdown(text)
    text = clean_text(text)
    headings = find_text_headings(text)
    if "title" not in meta:
        first = next((h for h in headings if MD_HEADING.match(text[h.start:h.end])), None)
        if first:
            meta["title"] = text[first.start:first.end].lstrip("#").strip()
    return meta, text, headings, ()


def _load_pdf(path: Path, raw: bytes, where: str) -> tuple[dict, str, tuple, tuple]:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoadError(
                f"{where}: the PDF is encrypted; save a decrypted copy (e.g. `qpdf --decrypt in.pdf out.pdf`) "
                "and ingest that"
            )
        parts = [_Part(page.extract_text() or "", page=number) for number, page in enumerate(reader.pages, start=1)]
        title = (reader.metadata.title if reader.metadata else None) or ""
    except LoadError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as exc:
        raise LoadError(
            f"{where}: the PDF is damaged and cannot be read ({type(exc).__name__}: {exc}); re-export or repair it"
        ) from None
    text, headings, page_starts = _assemble(parts)
    if not text.strip():
        raise LoadError(
            f"{where}: the PDF has no text layer (a scan?); run OCR on it first (e.g. `ocrmypdf`) and ingest the result"
        )
    return ({"title": str(title).strip()} if str(title).strip() else {}), text, find_text_headings(text), page_starts


_DROP_TAGS = ("script", "style", "nav", "header", "footer", "noscript", "template", "svg", "iframe", "form")
# A page built of divs marks its menus and footers by role, class or id ("site-nav", "breadcrumb", "footer").
_CHROME_ROLES = frozenset({"navigation", "banner", "contentinfo", "search"})
_CHROME_NAME = re.compile(r"^(?:site-?|page-?|global-?|top-?|main-?)?(?:nav|navbar|navigation|menu|menubar|"
                          r"breadcrumbs?|footer|sidebar|cookies?|cookie-?(?:banner|notice|consent)|skip-?link|share|"
                          r"social)$", re.IGNORECASE)


def _is_page_chrome(tag) -> bool:
    if tag.name in ("html", "body", "main", "article"):
        return False
    names = [tag.get("id") or "", *(tag.get("class") or [])]
    return (tag.get("role") or "").lower() in _CHROME_ROLES or any(_CHROME_NAME.match(n) for n in names if n)


def _main_content(soup):
    """The page's main element when it marks one (`<main>`, role="main", a single `<article>`), else its body:
    what sits beside it on the page (menus, related links, ads) is not the document."""
    marked = soup.find("main") or soup.find(attrs={"role": "main"})
    articles = soup.find_all("article")
    if marked is None and len(articles) == 1:
        marked = articles[0]
    return marked if marked is not None and marked.get_text(strip=True) else (soup.body or soup)


_BLOCK_TAGS = (
    "p", "div", "li", "tr", "table", "section", "article", "main", "aside", "blockquote", "pre",
    "ul", "ol", "dl", "dt", "dd", "figure", "figcaption", "caption", "h1", "h2", "h3", "h4", "h5", "h6",
)


def _load_html(path: Path, raw: bytes, where: str) -> tuple[dict, str, tuple, tuple]:
    from bs4 import BeautifulSoup

    markup = decode_bytes(raw, where)
    depth = _nesting_depth(markup)
    if depth > MAX_HTML_DEPTH:
        raise LoadError(
            f"{where}: the HTML is nested too deeply ({depth:,} levels, at most {MAX_HTML_DEPTH:,} are read); "
            "simplify it or convert it to text"
        )
    try:
        soup = BeautifulSoup(markup, "lxml")
        title = soup.title.get_text(" ", strip=True) if soup.title else ""
        for tag in soup.find_all(_DROP_TAGS):
            tag.decompose()
        for tag in soup.find_all(_is_page_chrome):
            tag.decompose()
        body = _main_content(soup)
        parts: list[_Part] = []
        # The text's own control characters (`&#1;`) would be taken for the heading markers put in below.
        for string in body.find_all(string=_CONTROL):
            string.replace_with(_CONTROL.sub("", string))
        for heading in body.find_all(["h1", "h2", "h3", "h4", "h5", "h6"]):
            heading.insert_before("\n\x01%s\x02" % heading.name[1])
            heading.insert_after("\x03\n")
        for tag in body.find_all(_BLOCK_TAGS):
            tag.insert_after("\n\n")
        for tag in body.find_all("br"):
            tag.replace_with("\n")
        flat = body.get_text("")
    except RecursionError:
        raise LoadError(f"{where}: the HTML is nested too deeply to parse; simplify or convert it to text") from None
    for block in re.split(r"\n\s*\n", flat):
        block = re.sub(r"[ \t\u00a0]+", " ", block)
        while "\x01" in block:
            before, _, rest = block.partition("\x01")
            level, _, rest = rest.partition("\x02")
            heading_text, _, block = rest.partition("\x03")
            if before.strip():
                parts.append(_Part(before.strip()))
            parts.append(_Part(" ".join(heading_text.split()), heading_level=int(level)))
        if block.strip():
            parts.append(_Part("\n".join(line.strip() for line in block.strip().split("\n"))))
    text, headings, _ = _assemble(parts)
    if not title and headings:
        title = text[headings[0].start:headings[0].end]
    return ({"title": title} if title else {}), text, headings, ()


MAX_HTML_DEPTH = 2_000  # real pages nest a few dozen levels; millions make the parser crawl
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)[^<>]*?(/?)>")
# Tags that never hold children, or that browsers close on their own: they do not deepen the tree.
_FLAT_TAGS = frozenset(
    "area base br col embed hr img input link meta source track wbr p li td th tr option dt dd".split()
)


def _nesting_depth(markup: str) -> int:
    """The deepest element nesting, by a linear scan of the tags (no parsing)."""
    depth = deepest = 0
    for closing, name, self_closing in _TAG.findall(markup):
        if self_closing or name.lower() in _FLAT_TAGS:
            continue
        depth = max(0, depth - 1) if closing else depth + 1
        deepest = max(deepest, depth)
    return deepest


def _load_docx(path: Path, raw: bytes, where: str) -> tuple[dict, str, tuple, tuple]:
    import io

    import docx
    from docx.table import Table

    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise LoadError(
            f"{where}: not a valid .docx (it is not a zip archive); re-save it from Word or LibreOffice"
        ) from None
    if unpacked > DOCX_MAX_EXPANSION * max(len(raw), 1 << 20):
        raise LoadError(
            f"{where}: the .docx unpacks to {unpacked / 1e6:.0f} MB from {len(raw) / 1e6:.1f} MB (a zip bomb?); refused"
        )
    try:
        document = docx.Document(io.BytesIO(raw))
    except Exception as exc:  # python-docx raises many unrelated types on damaged files
        raise LoadError(
            f"{where}: the .docx is damaged and cannot be read ({type(exc).__name__}); re-save it"
        ) from None
    parts: list[_Part] = []
    title = (document.core_properties.title or "").strip()
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            parts.extend(_Part(row) for row in _table_rows(block))
            continue
        style = (block.style.name if block.style is not None else "") or ""
        level = 1 if style == "Title" else int(style.split()[-1]) + 1 if re.fullmatch(r"Heading [1-9]", style) else 0
        if style == "Title" and not title:
            title = block.text.strip()
        parts.append(_Part(block.text, heading_level=level))
    text, headings, _ = _assemble(parts)
    return ({"title": title} if title else {}), text, headings, ()


def _table_rows(table) -> list[str]:
    """A line per row, cells joined by " | "; a table inside a cell is read too (`cell.text` leaves it out),
    its rows joined by "; "."""
    from docx.table import Table

    def cell_text(cell) -> str:
        pieces = ["; ".join(_table_rows(block)) if isinstance(block, Table) else block.text
                  for block in cell.iter_inner_content()]
        return " ".join(piece.strip() for piece in pieces if piece.strip())

    return [" | ".join(cell_text(cell) for cell in row.cells) for row in table.rows]


_LOADERS = {
    ".txt": _load_text, ".md": _load_text, ".markdown": _load_text, ".pdf": _load_pdf,
    ".html": _load_html, ".htm": _load_html, ".docx": _load_docx,
}


def load_document(path: Path, *, root: Path | None = None, max_file_mb: float = 50) -> Document:
    """Read one file into a `Document`; raise `LoadError` naming the file and the reason."""
    where = str(path)
    suffix = path.suffix.lower()
    if suffix not in _LOADERS:
        raise UnsupportedFileError(
            f"{where}: unsupported file type {suffix or '(none)'!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    raw = read_file_bytes(path, max_file_mb)
    meta, text, headings, page_starts = _LOADERS[suffix](path, raw, where)
    if not text.strip():
        raise LoadError(f"{where}: contains no text")
    doc_id = validate_doc_id(meta.get("doc_id") or derive_doc_id(path, root), where)
    return Document(
        doc_id=doc_id,
        text=text,
        title=meta.get("title") or path.stem.replace("_", " ").replace("-", " ").strip() or doc_id,
        path=stored_path(path, root),
        file_sha256=hashlib.sha256(raw).hexdigest(),
        language=meta.get("language") or detect_language(text),
        publisher=meta.get("publisher", ""),
        published=meta.get("published", ""),
        source=meta.get("source", ""),
        headings=headings,
        page_starts=page_starts,
        flags=(ADDRESSES_ASSISTANT,) if addresses_assistant(text) else (),
    )


def read_file_bytes(path: Path, max_file_mb: float) -> bytes:
    """The file's bytes, or a LoadError for a missing, looping, unreadable, empty or oversized file."""
    where = str(path)
    try:
        resolved = path.resolve(strict=True)
        size = resolved.stat().st_size
        if not resolved.is_file():
            raise LoadError(f"{where}: is not a regular file")
        if size > max_file_mb * 1_000_000:
            raise FileTooLargeError(
                f"{where}: is {size / 1e6:.1f} MB, over the limit RAG_MAX_FILE_MB={max_file_mb:g}; "
                "split it or raise the limit"
            )
        with open(resolved, "rb") as handle:
            raw = handle.read(int(max_file_mb * 1_000_000) + 1)
    except LoadError:
        raise
    except FileNotFoundError:
        raise LoadError(f"{where}: does not exist (moved or deleted?)") from None
    except PermissionError:
        raise LoadError(f"{where}: cannot be read (permission denied); fix its permissions") from None
    except RuntimeError:  # pathlib reports symlink loops this way
        raise LoadError(f"{where}: is a symlink loop; fix or remove the link") from None
    except OSError as exc:
        reason = (
            "is a symlink loop; fix or remove the link"
            if exc.errno == errno.ELOOP
            else f"cannot be read ({exc.strerror})"
        )
        raise LoadError(f"{where}: {reason}") from None
    if len(raw) > max_file_mb * 1_000_000:
        raise LoadError(f"{where}: grew past RAG_MAX_FILE_MB={max_file_mb:g} while being read")
    if not raw.strip():
        raise LoadError(f"{where}: is empty")
    return raw
