"""Sentence candidates of an extractive answer, on hand-made passages: what may be quoted, and how."""

import numpy as np

from rag.candidates import (
    continues,
    rank_candidates,
    sentence_candidates,
    type_fit,
    with_its_antecedent,
    with_its_term,
    word_pairs,
)
from rag.chunking import sentence_units
from rag.documents import Chunk
from rag.questions import analyse
from rag.retrieval import Retrieved
from rag.selection import FEATURES


def passage(text: str, start: int = 0) -> Retrieved:
    units = tuple(sentence_units(text, ""))
    return Retrieved(Chunk("doc#1", "doc", text, 0, start, start + len(text), units=units), 1.0, 1)


def test_a_lead_in_a_question_and_a_bare_term_are_not_candidates():
    text = ("The guidelines set three duties for districts:\n- Each district keeps a register of reuse connections.\n"
            "What happens when a pipe leaks?\nReuse Steward\n2. \"Grey Water Loop\"\n")
    assert [c.text for c in sentence_candidates([passage(text)])] == [
        "Each district keeps a register of reuse connections."]


def test_a_passage_that_only_leads_in_to_the_next_one_gives_no_candidate():
    # its section holds the heading and the announcement; the list is the next section's
    text = "Sector Guidelines\nThe document provides tailored instructions for specific sectors:"
    assert sentence_candidates([passage(text)]) == []


def test_a_definition_under_its_term_is_quoted_with_the_term_at_document_offsets():
    text = "Terms\n\nReuse Steward\n- An officer who keeps the register of reuse connections.\n"
    candidate = next(c for c in sentence_candidates([passage(text, start=100)]) if "officer" in c.text)
    quoted = with_its_term(candidate)
    assert quoted.text == "Reuse Steward\n- An officer who keeps the register of reuse connections."
    assert (quoted.start, quoted.end) == (100 + text.index("Reuse Steward"), candidate.end)


def test_a_byline_above_a_paragraph_is_not_taken_for_a_term():
    text = "Riverton News\nThe Water Office opened two reuse circuits in the old town this spring.\n"
    candidate = sentence_candidates([passage(text)])[0]
    assert with_its_term(candidate) == candidate


def test_a_bullet_line_of_two_sentences_is_one_item_and_a_block_holds_it_whole():
    text = ("Duties\n- Steel: Dynamic models cover the whole process. Global optimisation of scheduling.\n"
            "- Water: Reuse circuits serve every district.\n"
            "The office checks them each spring. It reports to the council.\n")
    found = sentence_candidates([passage(text)], list_question=True)
    assert [c.text for c in found if not c.is_block] == [
        "Steel: Dynamic models cover the whole process. Global optimisation of scheduling.",
        "Water: Reuse circuits serve every district.",
        "The office checks them each spring.",  # prose keeps a candidate per sentence
        "It reports to the council.",
    ]
    block = next(c for c in found if c.is_block)
    assert block.text.endswith("scheduling.\n- Water: Reuse circuits serve every district.")
    assert block.units == (0, 1, 2)


def test_a_sentence_that_points_back_is_quoted_from_the_sentence_it_points_to():
    text = ("Mara Quell chairs the Water Office. She also signs every reuse permit in the old town.\n"
            "Why was this issued? This notice sets the fees.\n")
    candidates = {c.text: c for c in sentence_candidates([passage(text, start=50)])}
    quoted = with_its_antecedent(candidates["She also signs every reuse permit in the old town."])
    assert quoted.text == "Mara Quell chairs the Water Office. She also signs every reuse permit in the old town."
    assert (quoted.start, quoted.units) == (50, (0, 1))
    notice = candidates["This notice sets the fees."]
    assert with_its_antecedent(notice) == notice  # a question the text asks itself says nothing of it
    opening = candidates["Mara Quell chairs the Water Office."]
    assert with_its_antecedent(opening) == opening


def test_a_chinese_sentence_that_points_back_is_quoted_with_the_one_before():
    text = "水务局发布了再生水管理办法。该办法自2026年3月1日起施行。\n"
    candidate = next(c for c in sentence_candidates([passage(text)]) if c.text.startswith("该办法"))
    assert with_its_antecedent(candidate).text == "水务局发布了再生水管理办法。该办法自2026年3月1日起施行。"


def test_a_count_is_not_answered_by_a_year_or_by_the_questions_own_figure():
    asked = analyse("How many datasets will the 3 ministries build by 2027?")
    assert type_fit(asked, "The plan for the 3 ministries runs until 2027.", False) == 0
    assert type_fit(asked, "They will build 100 datasets by 2027.", False) > 0
    assert type_fit(asked, "They will build two hundred datasets.", False) > 0


def test_a_count_is_not_answered_by_the_number_of_a_figure_or_a_rule():
    asked = analyse("How many datasets will be built?")
    assert type_fit(asked, "Figure 4 and Rule 3.2.1 describe the datasets.", False) == 0
    assert type_fit(asked, "Figure 4 shows the 100 datasets.", False) > 0


def test_the_documents_title_and_headings_are_not_candidates():
    title = "Riverton Opens “Grey + Green” Reuse Circuits, 2 of Them"
    text = f"{title}\nThe Water Office opened two reuse circuits in the old town this spring.\n"
    units = tuple(sentence_units(text, ""))
    chunk = Chunk("doc#1", "doc", text, 0, 0, len(text), title=title, units=units)
    assert [c.text for c in sentence_candidates([Retrieved(chunk, 1.0, 1)])] == [
        "The Water Office opened two reuse circuits in the old town this spring."]


def test_the_title_is_not_a_candidate_behind_an_emoji_or_a_full_stop():
    title = "RIVERTON 2028: The “Grey + Green” Reuse Plan of the Water Office"
    text = f"🌊 {title}.\nThe Water Office opened two reuse circuits in the old town this spring.\n"
    chunk = Chunk("doc#1", "doc", text, 0, 0, len(text), title=title, units=tuple(sentence_units(text, "")))
    assert [c.text for c in sentence_candidates([Retrieved(chunk, 1.0, 1)])] == [
        "The Water Office opened two reuse circuits in the old town this spring."]


def test_a_figure_caption_answers_only_a_question_about_the_figure():
    caption = "Figure 2: The three-stage plan for reuse circuits in Riverton."
    sentence = "The Water Office will open 12 reuse circuits by 2028."
    kept = [c for c in sentence_candidates([passage(f"{caption}\n{sentence}\n")])]
    rows = np.zeros((len(kept), len(FEATURES)))
    probabilities = np.array([0.9 if c.text == caption else 0.5 for c in kept])

    def lead(question: str) -> str:
        return rank_candidates(analyse(question), kept, rows, probabilities)[0].text

    assert lead("What is the plan for reuse circuits?") == sentence
    assert lead("What does Figure 2 show about the reuse circuits?") == caption


def test_a_place_is_named_neither_by_a_label_nor_initials_nor_a_quote_nor_an_institution():
    sentences = ["Regional Partners: Working with the OECD and the \"Clean Rivers Alliance\" on reuse standards.",
                 "The Riverton City Water Office trains the stewards.",
                 "The first training centre opens in the old harbour of Port Harlow next year."]
    kept = sentence_candidates([passage("\n".join(sentences) + "\n")])
    rows = np.zeros((len(kept), len(FEATURES)))

    def named(question: str) -> list[str]:
        return [c.text for c in rank_candidates(analyse(question), kept, rows, np.full(len(kept), 0.5))]

    assert named("In which city will the training centre open?") == [sentences[2]]
    # initials and an institution may well name a company (and so may a place name: it takes no gazetteer)
    assert named("Which company works on reuse standards?") == sentences


def test_a_place_is_spelt_like_one_not_a_run_of_capitalised_common_words():
    sentences = ["The Strategic Action Plan sets up Smart Factories for reuse circuits.",
                 "The reuse circuits spread from the United States.",
                 "The reuse circuits came next to Harlowby.",
                 "Stewards of Kelmarsh Vale train the crews."]
    kept = sentence_candidates([passage("\n".join(sentences) + "\n")])
    rows = np.zeros((len(kept), len(FEATURES)))
    ranked = rank_candidates(analyse("In which country did the reuse circuits start?"), kept, rows,
                             np.full(len(kept), 0.5))
    assert [c.text for c in ranked] == sentences[1:]  # a place word, one word after "to", a word of no dictionary


def test_a_person_is_named_neither_by_a_body_nor_a_term_with_its_initials_nor_a_label():
    asked = analyse("Who is the head of the Water Office?")
    assert type_fit(asked, "The notice was signed by Mara Holt of the Water Office.", False) > 0
    for text in ["The Water Office, together with the National Development and Reform Commission, issued it.",
                 "Each district appoints a Chief Data Officer (CDO) to keep the register.",
                 "Main Topic: Reuse circuits in the old town."]:
        assert type_fit(asked, text, False) == 0, text


def test_a_run_of_capitalised_common_words_names_nobody():
    asked = analyse("Who is the head of the Water Office?")
    assert type_fit(asked, "Its type is a Government Policy and Strategic Action Plan.", False) == 0
    assert type_fit(asked, "Date of Issue: December 25, 2025 (Released Jan 9, 2026).", False) == 0
    assert type_fit(asked, "The plan was drafted by Wu Yin.", False) > 0
    assert type_fit(asked, "Peyton Manning drafted the plan.", False) > 0  # first in the sentence, yet a name


def test_a_pages_tags_and_a_task_set_as_a_question_are_not_candidates():
    text = ("Tags: Water Reuse, Grey Water, District Policy\nExplain the shift to metered reuse circuits.\n"
            "The Water Office opened two reuse circuits in the old town this spring.\n")
    assert [c.text for c in sentence_candidates([passage(text)])] == [
        "The Water Office opened two reuse circuits in the old town this spring."]


def test_a_share_written_as_a_fraction_answers_how_much():
    for question, text in [("How many of the circuits leak?", "Over half of them leak."),
                           ("What amount of the district's water is reused?", "About a third of it is reused.")]:
        assert type_fit(analyse(question), text, False) > 0


def test_word_pairs_reward_a_copied_phrase_not_the_same_words_reworded():
    asked = word_pairs("How many interceptions did the Panthers make in the 2015 season?")
    copied = word_pairs("In the 2015 season, the Panthers' defense made 24 interceptions.")
    reworded = word_pairs("Interceptions: 24, a season record for Panthers defense in 2015.")
    assert {("the", "2015"), ("2015", "season"), ("the", "panthers")} <= asked & copied
    assert not asked & reworded


def test_a_sentence_continues_the_one_before_it_only_inside_its_paragraph():
    lead, following, apart = sentence_candidates([passage(
        "The Water Office devised tests for leaking circuits. The Harlow test is the best known of them.\n"
        "Another paragraph starts here with its own sentence.\n")])
    assert continues(lead, following)
    assert not continues(following, apart)  # a new paragraph
    assert not continues(lead, apart) and not continues(following, lead)
