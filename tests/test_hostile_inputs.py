"""Every input a user hands over, broken in each way we know: one line on stderr naming the file and the field or
example, exit code 2, never a traceback."""
import json
import shutil

import pytest

from latentqa.cli import main
from latentqa.resources import SAMPLE_PATH

RECORDS = json.loads(SAMPLE_PATH.read_text())[:2]
FIRST = RECORDS[0]["_id"]


def _json(obj):
    return lambda path: path.write_text(json.dumps(obj))


def _parquet(change):
    def write(path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from latentqa.data.sources import load_examples, to_hub_rows

        rows = to_hub_rows(load_examples(str(SAMPLE_PATH), limit=2)[0])
        for row in rows:  # every row, so that the column takes the broken type
            change(row)
        pq.write_table(pa.Table.from_pylist(rows), path)
    return write


def _with(**fields):
    return [{**RECORDS[0], **fields}, RECORDS[1]]


# name: (file suffix, how to write it, what the one line must say)
DATA_FILES = {
    "empty list": (".json", _json([]), "holds no examples"),
    "empty file": (".json", lambda p: p.write_text(""), "empty file"),
    "not UTF-8": (".json", lambda p: p.write_bytes(json.dumps(RECORDS).replace("Ed Wood", "Ed W\\u00f6od")
                                                   .encode().replace(b"\\u00f6", b"\xf6")), "not UTF-8"),
    "not JSON": (".json", lambda p: p.write_text("[{"), "not valid JSON"),
    "an object": (".json", _json({"data": RECORDS}), "expected a JSON list of examples"),
    "question not a string": (".json", _json(_with(question=5)), f"(id {FIRST}): question must be a string"),
    "answer not a string": (".json", _json(_with(answer=["a"])), f"(id {FIRST}): answer must be a string"),
    "missing key": (".json", _json([{k: v for k, v in RECORDS[0].items() if k != "context"}]),
                    f"(id {FIRST}): missing key 'context'"),
    "context a string": (".json", _json(_with(context="text")), "context must be a list of [title, [sentences]]"),
    "null sentence list": (".json", _json(_with(context=[["A", None]])), "context paragraph 0 (A) sentences"),
    "sent_id a string": (".json", _json(_with(supporting_facts=[["A", "one"]])), "[title, integer sent_id] pair"),
    "duplicate ids": (".json", _json([RECORDS[0], RECORDS[1], RECORDS[0]]),
                      f"id {FIRST} appears twice (examples #0 and #2)"),
    "parquet sent_id a string": (".parquet", _parquet(lambda r: r["supporting_facts"].update(
        sent_id=[str(i) for i in r["supporting_facts"]["sent_id"]])),
                                 "[title, integer sent_id] pair"),
    "parquet null sentence list": (".parquet", _parquet(lambda r: r["context"]["sentences"].__setitem__(0, None)),
                                   "sentences must be a list of strings"),
}

PREDICTION_FILES = {
    "a list": ([1, 2], 'expected {"answer"'),
    "answer not a string": ({"answer": {FIRST: 5}}, f"answer of id {FIRST} is int"),
    "unknown id": ({"answer": {"nope": "x"}}, "id nope is not in the gold data"),
    "sp not pairs": ({"answer": {FIRST: "x"}, "sp": {FIRST: [["A"]]}}, f"supporting facts of id {FIRST}"),
}

CONFIGS = {  # YAML text or overrides
    "unknown key": ("train:\n  epoch: 3\n", "unknown field(s) ['epoch'] in section 'train'"),
    "wrong type": ("train:\n  epochs: many\n", "train.epochs must be int"),
    "a YAML list": ("- train\n- eval\n", "expected sections"),
    "eval.batch_size=0": (["eval.batch_size=0"], "eval.batch_size must be at least 1"),
    "eval.num_beams=0": (["eval.num_beams=0"], "eval.num_beams must be at least 1"),
    "negative sp.top_k": (["sp.top_k=-1"], "sp.top_k must be at least 1"),
    "top-k and paragraphs": (["sp.top_k=2", "sp.paragraphs=2"], "two rules: set one"),
    "sp.threshold above 1": (["sp.threshold=2"], "sp.threshold is a score in [0, 1]"),
    "a section not a mapping": ("train: 5\n", "section 'train' must hold fields (name: value), got 5"),
    "an infinite int": (["train.epochs=.inf"], "train.epochs must be int, got inf"),
    "an int past float range": (["train.max_steps=1e400"], "train.max_steps must be int | None"),
    "a NaN learning rate": (["train.lr_t5=.nan"], "train.lr_t5 must be float"),
}


def _one_line_exit_2(argv, capsys, *expected):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line.split("\r")[-1] for line in err.splitlines()]  # a progress bar of `datasets` may come first
    assert "Traceback" not in err and lines[-1].startswith("latentqa: error: "), err
    assert sum(line.startswith("latentqa:") for line in lines) == 1 and lines[-1] == lines[-1].strip(), err
    err = lines[-1]
    for text in expected:
        assert text in err, (text, err)


@pytest.mark.parametrize("name", DATA_FILES)
def test_broken_data_files(name, tmp_path, capsys):
    suffix, write, message = DATA_FILES[name]
    path = tmp_path / f"gold{suffix}"
    write(path)
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"answer": {}}))
    _one_line_exit_2(["score", "--gold", str(path), "--pred", str(pred)], capsys, str(path), message)


@pytest.mark.parametrize("name", PREDICTION_FILES)
def test_broken_prediction_files(name, tmp_path, capsys):
    payload, message = PREDICTION_FILES[name]
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(payload))
    _one_line_exit_2(["score", "--gold", str(SAMPLE_PATH), "--pred", str(pred)], capsys, str(pred), message)


def test_an_override_onto_a_section_that_is_not_a_mapping(tmp_path, capsys):
    path = tmp_path / "preset.yaml"
    path.write_text("train: 5\n")
    _one_line_exit_2(["train", "--config", str(path), "train.epochs=2"], capsys, str(path), "section 'train' must hold")


@pytest.mark.parametrize("flags, message", [
    (["--port", "99999"], "--port must be between 0 and 65535"),
    (["--max-body-mb", "inf"], "--max-body-mb must be a finite number above 0"),
    (["--max-pending", "0"], "--max-pending must be at least 1"),
    (["--max-wait-ms", "nan"], "--max-wait-ms must be a finite number"),
])
def test_serve_flags_are_checked_before_anything_loads(flags, message, tmp_path, capsys):
    _one_line_exit_2(["serve", "--model", str(tmp_path / "nowhere"), *flags], capsys, message)


@pytest.mark.parametrize("content, message", [
    ("{broken", "cannot read it"),
    ("[1, 2]", "expected an object of metrics"),
    ('{"em": "high"}', "em must be numbers"),
])
def test_compare_over_a_broken_metrics_file(content, message, tmp_path, capsys):
    (tmp_path / "metrics.json").write_text(content)
    _one_line_exit_2(["compare", str(tmp_path), "--out", str(tmp_path / "c.png")], capsys,
                     str(tmp_path / "metrics.json"), message)


def _set_model_type(path):
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "model_type": "no-such-model"}))


READER_PARTS = {  # how a reader folder's part is broken: (part, change, what the line says)
    "invalid t5 config": ("t5", lambda part: (part / "config.json").write_text("{"), "not a valid JSON file"),
    "unknown model_type": ("encoder", lambda part: _set_model_type(part / "config.json"), "no-such-model"),
    "no tokenizer file": ("t5", lambda part: (part / "tokenizer.json").unlink(), "no tokenizer.json"),
    "no part at all": ("encoder", shutil.rmtree, "no config.json, no tokenizer.json"),
}


@pytest.mark.parametrize("name", READER_PARTS)
def test_a_reader_folder_with_a_broken_part(name, trained_latent_run, tmp_path, capsys):
    part, change, message = READER_PARTS[name]
    folder = tmp_path / "reader"
    shutil.copytree(trained_latent_run / "best", folder)
    change(folder / part)
    _one_line_exit_2(["predict", "--model", str(folder), "--data", str(SAMPLE_PATH), "--out",
                      str(tmp_path / "p.json"), "--limit", "1"], capsys, str(folder / part), message)


@pytest.mark.parametrize("name", CONFIGS)
def test_broken_configs(name, tmp_path, capsys):
    content, message = CONFIGS[name]
    if isinstance(content, list):
        _one_line_exit_2(["train", *content], capsys, message)
    else:
        path = tmp_path / "preset.yaml"
        path.write_text(content)
        _one_line_exit_2(["train", "--config", str(path)], capsys, str(path), message)


def test_generation_flags_are_named_as_typed(tmp_path, capsys):
    _one_line_exit_2(["predict", "--model", str(tmp_path), "--data", str(SAMPLE_PATH), "--out",
                      str(tmp_path / "p.json"), "--num-beams", "0"], capsys, "--num-beams must be at least 1")
