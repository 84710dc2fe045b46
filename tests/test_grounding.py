"""The output check: a sentence is supported only if its passage has its figures, names and most words."""

import pytest

from rag.grounding import figures_in, fold, spelling_key, unsupported_reason

PASSAGE = ("By 2027, the plan seeks to create 100 high‑quality industrial datasets and scale 500 representative "
           "application scenarios, led by the Ministry of Industry and Information Technology.")


def test_supported_sentence():
    assert unsupported_reason("The plan will create 100 high-quality industrial datasets by 2027 [1].", PASSAGE) is None


def test_a_figure_not_in_the_passage():
    assert unsupported_reason("The plan will create 250 industrial datasets.", PASSAGE) == \
        "the figure 250 is not in the cited passage"


def test_a_name_not_in_the_passage():
    reason = unsupported_reason("The plan is led by the National Data Bureau.", PASSAGE)
    assert reason == "the name 'National Data Bureau' is not in the cited passage"


def test_mostly_other_words():
    reason = unsupported_reason("Farmers receive subsidies for tractors and irrigation pumps.", PASSAGE)
    assert reason.startswith("only 0% of its content words")


def test_folding():
    assert fold("High‑Quality  “Datasets” — ok") == 'high-quality "datasets" - ok'


@pytest.mark.parametrize("asked, written", [
    ("Authorized Person(s)", "the Authorised Persons of a firm"),
    ("fund managers", "A Fund Manager must"),
    ("Categories", "each category"),
    ("Erganzungsschulen", "such as Ergänzungsschulen,"),  # accents
    ("SR99", "traffic along SR 99"),  # letters and digits apart
])
def test_a_name_matches_its_spelling_variants_plurals_and_case(asked, written):
    assert spelling_key(asked) in spelling_key(written)


def test_a_name_matches_whole_words_only():
    assert spelling_key("art") not in spelling_key("the party started")


def test_figures_written_as_words_count_as_figures():
    assert {"4", "1000", "2027"} <= figures_in("At least four primes, a thousand datasets, by 2027.")
