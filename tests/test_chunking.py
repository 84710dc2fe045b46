"""Chunking: along the structure, token-bounded, exact offsets, never mid-word, never truncated by the model."""

from __future__ import annotations

import re

import pytest
from conftest import CORPUS

from rag.chunking import chunk_document, count_tokens, sentence_spans, sentence_units
from rag.documents import Document
from rag.loaders import find_text_headings, load_document


def doc_of(text: str, **fields) -> Document:
    return Document(doc_id=fields.pop("doc_id", "d"), text=text, title="T", path="/x", file_sha256="0",
                    headings=find_text_headings(text), **fields)


def corpus_documents():
    return [load_document(path, root=CORPUS) for path in sorted(CORPUS.glob("*.md"))]


def test_chunk_text_is_the_exact_slice_of_the_document():
    for doc in corpus_documents():
        for chunk in chunk_document(doc, 120, 20):
            assert doc.text[chunk.start:chunk.end] == chunk.text


def test_chunks_respect_the_token_budget_and_cover_every_word():
    for doc in corpus_documents():
        chunks = chunk_document(doc, 120, 20)
        assert all(count_tokens(c.text) <= 120 for c in chunks)
        covered = set()
        for chunk in chunks:
            covered.update(range(chunk.start, chunk.end))
        heading_only = {i for h in doc.headings for i in range(h.start, h.end)}
        missed = [m.group() for m in re.finditer(r"\S+", doc.text)
                  if m.start() not in covered and m.start() not in heading_only]
        assert missed == []


def test_sections_carry_the_heading_path():
    text = "# Plan\n\nIntro.\n\n## Targets\n\nBy 2027, 100 datasets.\n\n## Measures\n\nVouchers for SMEs."
    chunks = chunk_document(doc_of(text), 50, 0)
    assert [(c.section, c.text.split("\n")[-1]) for c in chunks] == [
        ("Plan", "Intro."),
        ("Plan > Targets", "By 2027, 100 datasets."),
        ("Plan > Measures", "Vouchers for SMEs."),
    ]


def test_numbered_clauses_and_chinese_articles_are_headings():
    text = ("1. INTRODUCTION\n\n1.1 Jurisdiction\n\n1.1.1.(1) The Rulebook applies in the ADGM.\n\n"
            "第二章 能效目标\n\n第三条\n\n人工智能赋能制造业。\n\n第四条 建设工业数据集。")
    levels = [(text[h.start:h.end], h.level) for h in find_text_headings(text)]
    # 第四条 with its text on the line is a clause, not a title
    assert levels == [("1. INTRODUCTION", 2), ("1.1 Jurisdiction", 3), ("第二章 能效目标", 3), ("第三条", 5)]


def test_long_paragraphs_split_at_sentences_english_and_chinese():
    english = " ".join(f"Sentence number {i} talks about industrial datasets and models." for i in range(40))
    chinese = "".join(f"第{i}句话讨论工业数据集和大模型。" for i in range(60))
    for text in (english, chinese):
        chunks = chunk_document(doc_of(text), 60, 0)
        assert len(chunks) > 3
        for chunk in chunks:
            assert chunk.text.endswith((".", "。"))


def test_no_split_inside_a_word_or_number():
    text = "Target " + " ".join(f"1,000,{i:03d}.5" for i in range(400))
    for chunk in chunk_document(doc_of(text), 40, 0):
        assert re.fullmatch(r"(Target )?[\d,.]+( [\d,.]+)*", chunk.text), chunk.text


def test_overlap_repeats_whole_sentences():
    text = " ".join(f"Fact {i} is stated here." for i in range(30))
    chunks = chunk_document(doc_of(text), 40, 12)
    for before, after in zip(chunks, chunks[1:]):
        assert after.start < before.end
        assert after.text.split(". ")[0] + "." in before.text


def test_ids_are_stable_and_change_with_content():
    text = "By 2027, 100 datasets. " * 30
    first = [c.chunk_id for c in chunk_document(doc_of(text), 50, 10)]
    assert first == [c.chunk_id for c in chunk_document(doc_of(text), 50, 10)]
    changed = chunk_document(doc_of(text.replace("100", "200")), 50, 10)
    assert not set(first) & {c.chunk_id for c in changed}


def test_overlap_must_be_smaller_than_chunk():
    with pytest.raises(ValueError, match="overlap 50 must be smaller"):
        chunk_document(doc_of("text"), 50, 50)


def test_pdf_pages_are_kept_in_chunks():
    text = "Page one text.\n\nPage two text."
    doc = doc_of(text, page_starts=(0, text.index("Page two")))
    chunks = chunk_document(doc, 4, 0)
    assert [(c.text, c.page) for c in chunks] == [("Page one text.", 1), ("Page two text.", 2)]


def test_no_corpus_chunk_exceeds_the_models_max_sequence_length(main_model):
    """The embedder would silently cut anything longer; the chunker must split it instead."""
    for doc in corpus_documents():
        for chunk in chunk_document(doc, 200, 30, main_model.fits):
            assert main_model.count_model_tokens(chunk.indexed_text) <= main_model.max_tokens


def test_fits_check_splits_chunks_the_model_would_truncate(main_model):
    text = " ".join(["The 1,000 benchmark enterprises (SASAC, SAMR) & 2–3 ecosystem leaders."] * 60)
    loose = chunk_document(doc_of(text), 1500, 0)
    assert max(main_model.count_model_tokens(c.indexed_text) for c in loose) > main_model.max_tokens
    bounded = chunk_document(doc_of(text), 1500, 0, main_model.fits)
    assert all(main_model.fits(c.indexed_text) for c in bounded)
    assert "".join(c.text + " " for c in bounded).split() == text.split()


def test_sentence_spans_respect_abbreviations_and_lines():
    text = (
        "Standardization vs. Innovation: will it? Released Jan. 9, 2026. Version 1.5 ships.\n- One\n中文句子。另一句！"
    )
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "Standardization vs. Innovation: will it?", "Released Jan. 9, 2026.", "Version 1.5 ships.", "- One",
        "中文句子。", "另一句！"]


def test_the_numbering_that_opens_a_line_is_not_a_sentence_of_its_own():
    text = '2. "Model-Data Resonance"\nThe policy names data as the bottleneck. It grew by 2. Then more.\n' \
           "1.1.1.(1) The Rulebook applies.\nIV. Security"
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        '2. "Model-Data Resonance"', "The policy names data as the bottleneck.", "It grew by 2.", "Then more.",
        "1.1.1.(1) The Rulebook applies.", "IV. Security"]
    units = sentence_units(text, "")
    # the numbered, quoted term labels what follows it instead of being quoted as an answer
    assert (units[0].text(text), units[0].label) == ("The policy names data as the bottleneck.",
                                                     '2. "Model-Data Resonance"')


def test_sentence_units_carry_their_label_and_skip_label_lines():
    text = ("V. Security & Governance\n- Tech: Anti-deepfake authentication.\n- Computing Power:\n"
            "- Push for chips: edge chips.")
    units = sentence_units(text, "Detailed Breakdown > V. Security & Governance")
    assert [(u.text(text), u.label) for u in units] == [
        ("Tech: Anti-deepfake authentication.", "V. Security & Governance"),
        ("Push for chips: edge chips.", "Computing Power"),
    ]
    assert units[1].embedding_text(text) == "Computing Power: Push for chips: edge chips."


def test_a_glossary_term_stays_with_its_definition_across_a_chunk_boundary():
    names = "Alpha Beta Gamma Delta Epsilon Zeta Eta Theta Iota Kappa Lambda Omicron".split()
    entries = [f"- Term {names[n - 1]}\n- The meaning of entry {n} is explained in this sentence of some length."
               for n in range(1, 13)]
    doc = doc_of("Glossary\n" + "\n".join(entries))
    chunks = chunk_document(doc, chunk_tokens=48, overlap=0)
    assert len(chunks) > 2
    for chunk in chunks:
        assert not re.search(r"- Term \w+$", chunk.text)  # never ends on a bare term
    for n in range(1, 13):
        holder = next(c for c in chunks if f"- Term {names[n - 1]}\n" in c.text)
        assert f"entry {n} is explained" in holder.text
        unit = next(u for u in sentence_units(holder.text, holder.section) if f"entry {n} " in u.text(holder.text))
        assert unit.label == f"Term {names[n - 1]}"  # the term labels its definition
