"""Question analysis: normal form, answer type, terms an answer cannot do without, follow-up rewriting."""

import pytest

from rag.errors import QuestionError
from rag.questions import analyse, normalise, rewrite_follow_up


@pytest.mark.parametrize("question, kind", [
    ("How many industrial datasets by 2027?", "numeric"),
    ("What percentage of firms must adopt AI?", "numeric"),
    ("What is the monetary value of each voucher?", "numeric"),
    ("What is the maximum reward for a single project?", "numeric"),
    ("What is the largest city of the region?", "other"),
    ("When was the plan issued?", "date"),
    ("Which ministry leads the action?", "who"),
    ("What are the four pillars?", "list"),
    ("到2027年要建设多少个数据集？", "numeric"),
    ("Explain the Model-Data Resonance initiative.", "other"),
    ("What is pilot-scale verification?", "definition"),
    ("What does CDO stand for?", "definition"),
    ("What is the goal of the plan?", "other"),
    ("When must an Authorised Person notify the Regulator?", "condition"),
    ("In what circumstances may a Fund Manager delegate its functions?", "condition"),
    ("When is the deadline for the first report?", "date"),
    ("Summarise the plan", "summary"),
    ("什么是试点验证？", "definition"),
])
def test_answer_type(question, kind):
    assert analyse(question).kind == kind


def test_counted_noun_and_its_qualifiers():
    asked = analyse("How many humanoid robots are to be deployed in factories by 2027?")
    assert (asked.head_noun, asked.modifiers) == ("robot", ("humanoid",))
    assert analyse("How many ministries or departments issued it?").modifiers == ()
    for share_or_change in ("How much of the greenhouse effect is due to carbon dioxide?",
                            "How much has the mean temperature changed?", "How many of the voters must agree?"):
        assert analyse(share_or_change).head_noun is None  # nothing is counted


@pytest.mark.parametrize("question, kind, unit", [
    ("What is the price of a reuse permit?", "numeric", "currency"),
    ("How much money is in the fund?", "numeric", "currency"),
    ("Where must a notice be sent if Price Stabilisation is expected?", "other", None),  # names a price, asks none
    ("When may a manager act on the market price?", "condition", None),
])
def test_a_question_for_a_sum_asks_for_one(question, kind, unit):
    asked = analyse(question)
    assert (asked.kind, asked.unit) == (kind, unit)


def test_required_terms_are_figures_and_names():
    assert analyse("What targets has the United States set for 2030?").required == ("2030", "United States")
    # Of a Chinese question its years and its names in Latin letters, which English writes alike; not its other
    # numbers ("第 49 届" is "XLIX")
    assert analyse("美国为2030年设定了哪些目标？").required == ("2030",)
    assert analyse("谁赢得了第 49 届超级碗？").required == ()
    assert analyse("Sky Digital 和 BSkyB 是什么时候推出的？").required == ("Sky Digital", "BSkyB")


def test_one_word_names_stand_alone_inside_the_sentence_and_are_no_common_word():
    asked = analyse("How many stewards will the academies in Harlowby, Kelmarsh and Port Tennant train?")
    assert asked.one_word_names == ("Harlowby", "Kelmarsh")  # "Port Tennant" is a name of two words
    assert asked.required == ("Port Tennant",)  # one word is not required: questions misspell it
    assert analyse("Harlowby opens when? And what of the Plan?").one_word_names == ()  # sentence starts, a word
    assert analyse("哪些学院在 Harlowby？").one_word_names == ()


def test_normalisation_strips_controls_and_direction_marks():
    assert normalise("How\x00 many\u202e datasets\u200b?\tnow", 100) == "How many datasets ? now"
    with pytest.raises(QuestionError, match="empty"):
        normalise(" \x07 ?? ", 100)


def test_a_question_that_stands_alone_is_asked_as_it_is_after_another():
    previous = ("How many industrial datasets are to be built by 2027?",)
    assert rewrite_follow_up("What must SMEs do?", previous) == "What must SMEs do?"
    assert rewrite_follow_up("What is pilot-scale verification?", previous) == "What is pilot-scale verification?"


@pytest.mark.parametrize("question", ["What about SMEs?", "And by 2030?", "What does this mean?", "Who issued it?",
                                      "What are their targets?"])
def test_a_question_that_leans_on_the_previous_one_is_rewritten(question):
    rewritten = rewrite_follow_up(question, ("What is the Model-Data Resonance initiative?",))
    assert rewritten != question and "Model-Data Resonance" in rewritten


def test_follow_ups_carry_the_previous_key_terms():
    assert rewrite_follow_up("and for SMEs?", ("How many benchmark enterprises are selected?",)) == \
        "How many and for SMEs (benchmark enterprises selected)?"
    assert rewrite_follow_up("When was it issued?", ("What is the Special Action?",)) == \
        "When was it issued (Special Action)?"
    long_own_question = "Which ministries issued the Implementation Opinions on industrial datasets?"
    assert rewrite_follow_up(long_own_question, ("What are the targets?",)) == long_own_question


@pytest.mark.parametrize("question, category", [
    ("In which city will the centre be built?", "city"),
    ("Which Chinese chipmakers are to supply the chips?", "chipmakers"),
    ("先进智能算力设施将布局在哪些省份？", "province"),
    ("文件点名了哪些车企开展自动驾驶道路试点？", "company"),
    ("哪所大学培养了这位教授？", "university"),
    ("Which Florida city has the biggest population?", "city"),
    ("What must SMEs do?", None),
    ("What should a company evaluate at the outset?", None),  # the company is the subject, not what is asked
    ("What did Newcastle University win in 2000?", None),
    ("What country-wide system oversees computing power?", None),
    ("Which porcelain-producing town is cited?", "town"),
    ("Which specific export-control rules does it name?", "rules"),
    ("数据中心应当在每年几月几日前报送能耗数据？", None),
])
def test_a_question_for_a_named_instance_of_a_category_says_which_in_either_language(question, category):
    assert analyse(question).wants_name_of == category
