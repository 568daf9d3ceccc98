"""Queries are checked field by field; every shape the issue names is read the same way."""
import pytest

from latentqa.serving.queries import Limits, RequestError, parse_query, split_sentences


def test_the_sentence_rule_splits_at_end_marks_before_a_capital_or_digit():
    text = 'Paris is big. It has 2 airports! Is it old? "Yes." 1990 was a year. e.g. lower stays.'
    assert split_sentences(text) == ["Paris is big.", "It has 2 airports!", "Is it old?", '"Yes."',
                                     "1990 was a year. e.g. lower stays."]
    assert split_sentences("  ") == []


def test_every_paragraph_shape_gives_the_same_example():
    shapes = [
        [["Paris", ["Paris is big.", "It is old."]]],
        [("Paris", ("Paris is big.", "It is old."))],
        [["Paris", "Paris is big. It is old."]],
        [{"title": "Paris", "sentences": ["Paris is big.", "It is old."]}],
        [{"title": "Paris", "text": "Paris is big.  It is old."}],
    ]
    parsed = [parse_query({"question": "Is Paris old?", "paragraphs": p}) for p in shapes]
    assert all(ex == parsed[0] for ex in parsed)
    assert parsed[0].sentence_keys() == [("Paris", 0), ("Paris", 1)] and parsed[0].id is None
    assert parse_query({"id": 7, "question": "q", "paragraphs": shapes[0]}).id == "7"


@pytest.mark.parametrize("query, field", [
    ({"paragraphs": [["t", ["s"]]]}, "question"),
    ({"question": 3, "paragraphs": [["t", ["s"]]]}, "question"),
    ({"question": "  ", "paragraphs": [["t", ["s"]]]}, "question"),
    ({"question": "q"}, "paragraphs"),
    ({"question": "q", "paragraphs": "t: s"}, "paragraphs"),
    ({"question": "q", "paragraphs": [["t", ["s", 4]]]}, "paragraphs[0][1][1]"),
    ({"question": "q", "paragraphs": [{"title": "t", "sentences": ["s", None]}]}, "paragraphs[0].sentences[1]"),
    ({"question": "q", "paragraphs": [{"sentences": ["s"]}]}, "paragraphs[0].title"),
    ({"question": "q", "paragraphs": [{"title": "t", "text": "s", "sentences": ["s"]}]}, "paragraphs[0]"),
    ({"question": "q", "paragraphs": [{"title": "t", "body": "s"}]}, "paragraphs[0].body"),
    ({"question": "q", "paragraphs": [[1, ["s"]]]}, "paragraphs[0][0]"),
    ({"question": "q", "paragraphs": [["t", 5]]}, "paragraphs[0][1]"),
    ({"question": "q", "paragraphs": [["t"]]}, "paragraphs[0]"),
    ({"question": "q", "paragraphs": []}, "paragraphs"),
    ({"question": "q", "paragraphs": [["t", ["", "  "]], ["u", []]]}, "paragraphs"),
    ({"question": "q", "paragraphs": [["t", ["s"]]], "id": [1]}, "id"),
    ({"question": "q", "paragraphs": [["t", ["s"]]], "context": []}, "context"),
    ("what?", "body"),
])
def test_a_bad_query_names_its_field(query, field):
    with pytest.raises(RequestError) as caught:
        parse_query(query)
    assert caught.value.field == field, caught.value


def test_limits_are_enforced_and_named():
    limits = Limits(max_paragraphs=2, max_sentences=3, max_question_chars=10)
    ok = parse_query({"question": "q", "paragraphs": [["a", ["1", "2"]], ["b", ["3"]]]}, limits)
    assert len(ok.paragraphs) == 2
    for query, words in [
        ({"question": "q", "paragraphs": [["a", ["1"]]] * 3}, "3 paragraphs, over the limit of 2"),
        ({"question": "q", "paragraphs": [["a", ["1", "2"]], ["b", ["3", "4"]]]}, "4 sentences, over the limit of 3"),
        ({"question": "q" * 11, "paragraphs": [["a", ["1"]]]}, "11 characters, over the limit of 10"),
    ]:
        with pytest.raises(RequestError, match=words):
            parse_query(query, limits, field="[1].")
    with pytest.raises(ValueError, match="max_queries"):
        Limits(max_queries=0)


def test_a_field_prefix_names_the_query_in_a_list():
    with pytest.raises(RequestError) as caught:
        parse_query({"question": "q", "paragraphs": [["t", [1]]]}, field="[3].")
    assert caught.value.field == "[3].paragraphs[0][1][0]"
    assert str(caught.value).startswith("[3].paragraphs[0][1][0]: a sentence must be a string")
