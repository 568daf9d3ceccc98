"""`data/examples.py`: an example built from a source's raw fields, each field's type checked and named; what
would weaken an example counted, the example kept."""
import pytest

from latentqa.data.examples import DataError, LoadReport, check_example, checked_example

FIELDS = dict(example_id=17, question="Who?", titles=["A", "B"], sentences=[["a0.", "a1."], ["b0."]],
              facts=[["A", 1], ["B", 0]], answer="x", kind="bridge", level="hard")


def test_raw_fields_become_an_example_with_its_sentence_keys():
    example = checked_example("file.json, example 3", **FIELDS)
    assert example.id == "17" and example.paragraphs[1].sentences == ("b0.",) and example.type == "bridge"
    assert example.sentence_keys() == [("A", 0), ("A", 1), ("B", 0)] and example.unresolved_facts() == []


@pytest.mark.parametrize("field, value, named", [
    ("example_id", True, "the id"), ("question", None, "question"), ("answer", 3, "answer"),
    ("titles", ["A"], "context"), ("sentences", [["a0."], "b0."], r"context paragraph 1 \(B\) sentences"),
    ("facts", [["A", "1"]], "each supporting fact"), ("facts", [["A", True]], "each supporting fact"),
    ("level", 2, "level")])
def test_a_field_of_the_wrong_type_is_named_with_where_it_is(field, value, named):
    with pytest.raises(DataError, match=f"^file.json, example 3: {named} must be"):
        checked_example("file.json, example 3", **{**FIELDS, field: value})


def test_an_empty_context_or_an_unknown_fact_is_counted_and_the_example_kept():
    report = LoadReport("dev.json")
    unknown = checked_example("x", **{**FIELDS, "example_id": "u", "facts": [["C", 0], ["A", 5]]})
    empty = checked_example("x", **{**FIELDS, "example_id": "e", "sentences": [[], []], "facts": []})
    assert check_example(unknown, report) is unknown and check_example(empty, report) is empty
    assert unknown.unresolved_facts() == [("C", 0), ("A", 5)]
    assert report.lines() == ["dev.json: 1 example(s) with a supporting fact not found in the context (kept): u",
                              "dev.json: 1 example(s) with an empty context (kept): e"]
