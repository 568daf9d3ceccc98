import pytest

from latentqa.data.examples import Example
from latentqa.evaluation.metrics import answer_scores, normalize_answer, score, sp_scores


def test_normalisation():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


@pytest.mark.parametrize("pred, gold, expected", [
    ("the Big Apple", "Big Apple", (1.0, 1.0, 1.0, 1.0)),
    ("New York City", "New York", (0.0, 0.8, 2 / 3, 1.0)),  # 2 common; p 2/3, r 1, f1 0.8
    ("Paris", "London", (0.0, 0.0, 0.0, 0.0)),
    ("yes", "no", (0.0, 0.0, 0.0, 0.0)),
    ("yes", "Yes.", (1.0, 1.0, 1.0, 1.0)),
    ("yes it is", "yes", (0.0, 0.0, 0.0, 0.0)),  # gold is yes/no and they differ: F1 0 despite the shared token
    ("no", "no way", (0.0, 0.0, 0.0, 0.0)),  # prediction is yes/no and they differ
    ("noanswer", "no answer", (0.0, 0.0, 0.0, 0.0)),
    ("", "Paris", (0.0, 0.0, 0.0, 0.0)),
])
def test_answer_scores(pred, gold, expected):
    assert answer_scores(pred, gold) == pytest.approx(expected)


def test_sp_scores_sets_and_duplicates():
    gold = [["A", 0], ["B", 1]]
    assert sp_scores([["A", 0], ["B", 1]], gold) == (1.0, 1.0, 1.0, 1.0)
    assert sp_scores([["A", 0], ["A", 0], ["B", 1]], gold) == (1.0, 1.0, 1.0, 1.0)  # duplicates count once
    em, f1, p, r = sp_scores([["A", 0], ["C", 2], ["D", 0]], gold)  # tp 1, fp 2, fn 1
    assert (em, p, r) == (0.0, 1 / 3, 1 / 2) and f1 == pytest.approx(0.4)
    assert sp_scores([], gold) == (0.0, 0.0, 0.0, 0.0)
    assert sp_scores([], []) == (1.0, 0.0, 0.0, 0.0)  # the official rule: EM 1, nothing to be precise about


def _gold():
    para = ()
    return [
        Example(id="q1", question="?", paragraphs=para, answer="New York", supporting_facts=(("A", 0), ("B", 1))),
        Example(id="q2", question="?", paragraphs=para, answer="yes", supporting_facts=(("C", 0),)),
        Example(id="q3", question="?", paragraphs=para, answer="Paris", supporting_facts=(("D", 2),)),
    ]


def test_official_averages_with_a_missing_prediction():
    answers = {"q1": "New York City", "q2": "yes"}  # q3 missing: counts 0 in every average
    sp = {"q1": [["A", 0]], "q2": [["C", 0]], "q3": [["D", 2]]}
    m = score(_gold(), answers, sp)
    assert m["count"] == 3 and m["missing_answer"] == 1 and m["missing_sp"] == 0
    assert m["em"] == pytest.approx(1 / 3)
    assert m["f1"] == pytest.approx((0.8 + 1.0) / 3)
    assert m["prec"] == pytest.approx((2 / 3 + 1) / 3) and m["recall"] == pytest.approx((1 + 1) / 3)
    assert m["sp_em"] == pytest.approx(2 / 3)
    assert m["sp_f1"] == pytest.approx((2 / 3 + 1 + 1) / 3)  # q1: p 1, r 1/2 → f1 2/3
    # joint q1: p = 2/3 * 1, r = 1 * 1/2 → f1 = 2 * (1/3) / (7/6) = 4/7; q2: 1; q3: missing answer → 0
    assert m["joint_prec"] == pytest.approx((2 / 3 + 1) / 3)
    assert m["joint_recall"] == pytest.approx((1 / 2 + 1) / 3)
    assert m["joint_f1"] == pytest.approx((4 / 7 + 1) / 3)
    assert m["joint_em"] == pytest.approx(1 / 3)


def test_answer_only_predictions_mark_sp_absent():
    m = score(_gold(), {"q1": "New York", "q2": "no", "q3": "paris"}, None)
    assert m["em"] == pytest.approx(2 / 3)
    assert m["sp_em"] is None and m["joint_f1"] is None and m["missing_sp"] is None


def test_bucket_labels_cover_every_value():
    from latentqa.evaluation.report import bucket_label, bucket_labels

    assert bucket_labels((0, 512, 1024)) == ["0-512", "512-1024", "1024+"]
    assert [bucket_label(v, (0, 512, 1024)) for v in (0, 511, 512, 1023, 1024, 9999)] == \
        ["0-512", "0-512", "512-1024", "512-1024", "1024+", "1024+"]
