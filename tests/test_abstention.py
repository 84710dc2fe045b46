"""Abstention rules on hand-made passages: a count the documents never give for the asked kind of thing."""

from rag.abstention import numeric_problem, subject_without_typed_answer
from rag.candidates import sentence_candidates
from rag.chunking import sentence_units
from rag.documents import Chunk
from rag.questions import analyse
from rag.retrieval import Retrieved


def candidates(*sentences: str):
    text = "\n".join(sentences) + "\n"
    chunk = Chunk("doc#1", "doc", text, 0, 0, len(text), units=tuple(sentence_units(text, "")))
    return sentence_candidates([Retrieved(chunk, 1.0, 1)])


def test_figures_for_other_kinds_of_the_counted_thing_are_no_answer():
    asked = analyse("How many humanoid robots will the districts deploy?")
    found = candidates("The districts will deploy 100 industrial robots.", "Humanoid robots get their own pilot bases.")
    assert "humanoid robots but give no number" in numeric_problem(asked, found)


def test_a_figure_written_after_the_counted_thing_answers_it():
    asked = analyse("How many career sacks did Mara Holt record?")
    found = candidates("Kane Ruiz led the team in sacks with 11.",
                       "Mara Holt was the league's active career sack leader with 136.")
    assert numeric_problem(asked, found) is None


def test_a_figure_for_another_kind_beside_the_asked_one_is_no_answer():
    asked = analyse("How many humanoid robots will the districts deploy?")
    found = candidates("The districts will deploy 100 industrial robots and test humanoid robots.")
    assert "other kinds of robots, not for humanoid robots" in numeric_problem(asked, found)


def test_a_duration_is_given_with_its_unit():
    asked = analyse("By how many months will the reuse circuits shorten repairs?")
    assert "number of months" in numeric_problem(asked, candidates("The districts will open 12 reuse circuits."))
    assert numeric_problem(asked, candidates("Repairs will take three months less.")) is None


def test_passages_that_name_a_place_of_the_question_must_give_what_it_asks_of_it():
    # passages, not sentences: one names the place, another gives a year of something else
    found = candidates("The stewards train at academies in Harlowby and Kelmarsh.") + candidates(
        "The reuse circuits open in 2027.")
    asked = analyse("In which year will the academy in Harlowby open?")
    assert subject_without_typed_answer(asked, found) == "Harlowby"
    assert subject_without_typed_answer(asked, candidates("The academy in Harlowby opens in 2027.")) is None
