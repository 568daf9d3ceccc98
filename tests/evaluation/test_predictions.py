"""`evaluation/predictions.py`: the official prediction file written whole and read back; a bad file refused
naming the file and the first bad id."""
import json

import pytest

from latentqa.data.examples import DataError
from latentqa.evaluation.predictions import read_predictions, write_predictions


def test_prediction_files_round_trip_and_bad_files_are_named(tmp_path):
    path = write_predictions(tmp_path / "pred.json", {"q1": "x"}, {"q1": [["A", 0]]})
    assert read_predictions(path, ["q1", "q2"]) == ({"q1": "x"}, {"q1": [["A", 0]]})
    assert read_predictions(write_predictions(tmp_path / "a.json", {"q1": "x"}, None), ["q1"]) == ({"q1": "x"}, None)
    bad = {
        "nojson.json": "{not json",
        "shape.json": json.dumps(["q1"]),
        "answer.json": json.dumps({"answer": {"q1": 3}}),
        "sp.json": json.dumps({"answer": {"q1": "x"}, "sp": {"q1": [["A", "zero"]]}}),
        "unknown.json": json.dumps({"answer": {"q1": "x", "zz9": "y"}}),
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError) as info:
            read_predictions(tmp_path / name, ["q1"])
        assert str(tmp_path / name) in str(info.value)
    with pytest.raises(DataError, match="zz9"):
        read_predictions(tmp_path / "unknown.json", ["q1"])
    with pytest.raises(DataError, match="id q1"):
        read_predictions(tmp_path / "sp.json", ["q1"])


def test_a_prediction_file_is_replaced_whole_and_keeps_unicode(tmp_path):
    path = write_predictions(tmp_path / "out" / "pred.json", {"q1": "Zürich"}, {"q1": [["Zürich", 1]]})
    write_predictions(path, {"q1": "Genève"}, None)
    assert json.loads(path.read_text(encoding="utf-8")) == {"answer": {"q1": "Genève"}}
    assert "Genève" in path.read_text(encoding="utf-8") and [p.name for p in path.parent.iterdir()] == ["pred.json"]
