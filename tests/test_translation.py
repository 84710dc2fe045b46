"""Dictionary translation of Chinese questions into English search terms (real CC-CEDICT from the package)."""

from rag.lexical import tokenize
from rag.translation import common_english_words, derive_common_english_words, term_groups, translate


def test_content_words_become_their_first_glosses_and_figures_pass_through():
    english = translate("到2027年要建设多少个高质量工业数据集？")
    assert english.split()[0] == "2027"
    for term in ("build", "high quality", "industry", "dataset"):
        assert term in english
    assert tokenize(english)[:2] == ["2027", "build"]


def test_grammatical_and_question_words_are_dropped():
    english = translate("谁是国王？")
    assert english == "king"
    for question in ("美国政府什么时候发布了AI政策？", "他们在哪里建了多少个工厂？"):
        words = set(translate(question).lower().split())
        assert not words & {"who", "what", "when", "where", "time", "how", "many", "much"}, question


def test_the_measure_word_after_a_number_is_dropped_but_a_unit_is_kept():
    assert translate("谁赢得了第 49 届超级碗？") == "win gain 49 Super Bowl"
    assert "people" in translate("有多少人参加？").split()  # 人 after 多少 is what is counted
    assert translate("到2027年要建设多少个数据集？").split()[:2] == ["2027", "build"]  # the year 2027
    assert "year" in translate("这个项目要用3年？").split()  # three years


def test_latin_words_keep_their_case_and_place():
    english = translate("Sentanta Sports计划在什么平台上推出？")
    assert english.startswith("Sentanta Sports plan")
    assert "platform" in english


def test_common_senses_come_before_surnames_and_variant_forms():
    assert translate("王", glosses_per_word=1) == "king or monarch"  # not "surname Wang"
    assert translate("年") == "year"  # not "grain", the sense of its rare variant form 秊
    assert translate("美国") == "United States USA US"  # a proper name with no common sense is kept


def test_neighbouring_pieces_the_dictionary_knows_as_one_word_are_joined():
    assert "dataset" in translate("工业数据集").split()  # jieba cuts 数据 / 集
    assert "gather" not in translate("工业数据集")


def test_glosses_per_word_bounds_the_terms_and_nothing_chinese_remains():
    one, two = translate("防守", glosses_per_word=1), translate("防守", glosses_per_word=2)
    assert one == "defend" and two == "defend protect"
    assert translate("") == "" and translate("？！") == ""
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in translate("黑豹队的防守丢了多少分？"))


def test_each_asked_word_is_one_group_of_all_its_senses():
    groups = term_groups("到2027年要建设多少个工业数据集？")
    assert groups[0] == (("2027",),)
    build = next(g for g in groups if ("build",) in g)
    assert {("construct",), ("establish",)} <= set(build)  # every sense, where translate() keeps three
    assert (("dataset",),) in groups
    assert len(groups) == 4  # 2027, build, industry, dataset: the question's and measure words give none


def test_the_shipped_common_english_words_are_the_ones_the_dictionary_gives():
    shipped = common_english_words()
    assert shipped == derive_common_english_words(), "run `python -m rag.translation` to rewrite the list"
    assert {"policy", "minister", "state"} <= shipped
    assert not {"manning", "elway", "wu"} & shipped  # names, and pinyin from the dictionary's notes, are not words
