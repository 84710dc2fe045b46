"""The second opinion: a second multilingual model re-reads a Chinese question's best candidate sentences."""

import numpy as np
from conftest import make_settings

from rag.embedding import second_opinion_reader
from rag.selection import FEATURES, SECOND_OPINION_DEPTH, load_model, reweighed, second_opinion


def test_the_sentence_the_second_model_prefers_keeps_its_probability_and_the_others_fall_behind_it():
    probabilities = np.array([0.6, 0.5, 0.4, 0.1, 0.05, 0.02, 0.01])
    head = np.argsort(-probabilities)[:3]
    found = reweighed(probabilities, head, np.array([0.80, 0.90, 0.85]), weight=20)
    assert found[1] == probabilities[1]  # its favourite
    assert found[0] < probabilities[0] and found[2] < probabilities[2]
    assert found[0] < found[2] < found[1]  # ten points of cosine behind loses more than five
    assert list(found[3:]) == list(probabilities[3:])  # beyond the head nothing moves
    assert list(reweighed(probabilities, head, np.array([0.8, 0.9, 0.85]), weight=0)) == list(probabilities)


def test_a_chinese_question_s_answer_sentence_overtakes_a_close_distractor(tmp_path):
    reader = second_opinion_reader(make_settings(tmp_path))
    weight = load_model().second_opinion_weight
    assert weight > 0  # fitted by bench/fit_selection.py on held-out folds
    texts = ["The stadium was opened in 2014 and seats 68,500 people.",
             "Lady Gaga sang the national anthem before the game.",
             "The Denver Broncos defeated the Carolina Panthers to win Super Bowl 50."]
    probabilities = np.array([0.40, 0.30, 0.35])
    assert second_opinion("哪支球队赢得了第50届超级碗？", texts, probabilities, reader, weight).lead == 2
    assert second_opinion("哪支球队赢得了第50届超级碗？", texts, probabilities, reader, 0.0).lead == 0


def test_only_the_best_candidates_are_read_and_none_turns_it_off(tmp_path):
    reader = second_opinion_reader(make_settings(tmp_path))
    texts = [f"Filler sentence {n} about nothing much." for n in range(SECOND_OPINION_DEPTH)]
    texts.append("The Denver Broncos won Super Bowl 50.")  # the answer, but below the first model's best five
    probabilities = np.linspace(0.9, 0.5, len(texts))
    unread = second_opinion("哪支球队赢得了第50届超级碗？", texts, probabilities, reader, 1000.0)
    texts[0], texts[-1] = texts[-1], texts[0]
    read = second_opinion("哪支球队赢得了第50届超级碗？", texts, probabilities, reader, 1000.0)
    assert unread.lead < SECOND_OPINION_DEPTH and read.lead == 0
    assert read.cosine > unread.cosine  # the answer among the sentences read: the best cosine is higher
    assert second_opinion_reader(make_settings(tmp_path, second_opinion_model="none")) is None


def test_the_answerable_model_trusts_a_chinese_question_more_when_the_second_model_finds_its_sentences_close():
    model = load_model()
    rows = np.zeros((3, len(FEATURES)))
    rows[:, FEATURES.index("multilingual_similarity")] = 1.0
    probabilities = np.array([0.3, 0.2, 0.1])
    close = model.answerable_probability(rows, probabilities, 0.88)
    far = model.answerable_probability(rows, probabilities, 0.72)
    assert close > far
    assert model.answerable_probability(rows, probabilities, None) == model.answerable_probability(
        rows, probabilities, model.second_opinion_typical)  # not read: typical
    assert 0.7 < model.second_opinion_typical < 0.95  # a cosine of multilingual-e5, fitted on answerable ones


def test_each_answerable_model_abstains_below_its_own_calibrated_threshold():
    model = load_model()
    english, chinese = np.zeros((3, len(FEATURES))), np.zeros((3, len(FEATURES)))
    chinese[:, FEATURES.index("multilingual_similarity")] = 1.0
    assert model.abstain_threshold(english) == model.abstain_below
    assert model.abstain_threshold(chinese) == model.multilingual_abstain_below
    assert model.abstain_below != model.multilingual_abstain_below  # fitted apart: their scales differ
