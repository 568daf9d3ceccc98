import json
import subprocess
import sys
import time

import pytest

from latentqa.cli import main
from latentqa.data.examples import DataError
from latentqa.data.sources import load_examples, to_hub_rows
from latentqa.resources import SAMPLE_PATH


def test_official_json_loads_every_field(sample_examples):
    assert len(sample_examples) == 53
    ex = sample_examples[0]
    assert ex.id == "5a8b57f25542995d1e6f1371"
    assert ex.answer == "yes" and ex.type == "comparison" and ex.level == "hard"
    assert ex.supporting_facts == (("Scott Derrickson", 0), ("Ed Wood", 0))
    assert ex.paragraphs[0].title == "Ed Wood (film)" and len(ex.paragraphs) == 10
    assert all(not ex.unresolved_facts() for ex in sample_examples)


def test_parquet_in_hub_schema_round_trips(tmp_path, sample_examples):
    import datasets

    path = tmp_path / "validation.parquet"
    datasets.Dataset.from_list(to_hub_rows(sample_examples)).to_parquet(str(path))
    loaded, report = load_examples(str(path))
    assert loaded == sample_examples and not report.warnings


def test_snapshot_folder_with_configs_block(tmp_path, sample_examples):
    import datasets

    (tmp_path / "distractor").mkdir()
    datasets.Dataset.from_list(to_hub_rows(sample_examples[:5])).to_parquet(
        str(tmp_path / "distractor" / "validation-00000-of-00001.parquet"))
    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n- config_name: distractor\n  data_files:\n  - split: validation\n"
        "    path: distractor/validation-*\n---\n")
    loaded, _ = load_examples(f"{tmp_path}:distractor/validation")
    assert loaded == sample_examples[:5]


def test_unlabelled_examples_load(tmp_path, sample_examples):
    import datasets

    rows = to_hub_rows(sample_examples[:3])
    for row in rows:  # what the fullwiki test split looks like
        row["answer"], row["supporting_facts"] = "", {"title": [], "sent_id": []}
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "test.parquet"))
    loaded, _ = load_examples(str(tmp_path / "test.parquet"))
    assert [ex.answer for ex in loaded] == [None] * 3 and all(not ex.supporting_facts for ex in loaded)

    records = _sample_records(2)
    for rec in records:
        del rec["answer"], rec["supporting_facts"]
    (tmp_path / "unlabelled.json").write_text(json.dumps(records))
    loaded, _ = load_examples(str(tmp_path / "unlabelled.json"))
    assert [ex.answer for ex in loaded] == [None, None]


def _write(tmp_path, records, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def _sample_records(n=3):
    return json.loads(SAMPLE_PATH.read_text(encoding="utf-8"))[:n]


@pytest.mark.parametrize("content, expected", [
    (b"", "empty file"),
    (b"[{\"_id\": \"x\",", "not valid JSON"),
    (b"\xff\xfe[]", "not UTF-8"),
    (b"{\"_id\": \"x\"}", "expected a JSON list"),
])
def test_unreadable_files_stop_with_one_line_naming_the_file(tmp_path, capsys, content, expected):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected):
        load_examples(str(path))
    assert main(["data", "stats", "--data", str(path), "--tokenizer", "minilm"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and expected in err


def test_missing_key_names_file_position_and_id(tmp_path):
    records = _sample_records()
    del records[1]["question"]
    path = _write(tmp_path, records)
    with pytest.raises(DataError) as info:
        load_examples(str(path))
    assert str(path) in str(info.value) and "#1" in str(info.value)
    assert records[1]["_id"] in str(info.value) and "'question'" in str(info.value)


def test_malformed_context_is_an_error_naming_the_example(tmp_path):
    records = _sample_records()
    records[2]["context"] = [["only a title"]]
    with pytest.raises(DataError, match=records[2]["_id"]):
        load_examples(str(_write(tmp_path, records)))


@pytest.mark.parametrize("breakage, kind", [
    (lambda rec: rec["supporting_facts"].append([rec["context"][0][0], 99]), "supporting fact not found"),
    (lambda rec: rec["supporting_facts"].append(["No Such Title", 0]), "supporting fact not found"),
    (lambda rec: rec.update(context=[]), "empty context"),
])
def test_weak_examples_are_kept_and_counted(tmp_path, caplog, breakage, kind):
    records = _sample_records()
    breakage(records[1])
    examples, report = load_examples(str(_write(tmp_path, records)))
    assert len(examples) == 3  # kept, not dropped
    matching = [ids for warned_kind, ids in report.warnings.items() if kind in warned_kind]
    assert matching == [[records[1]["_id"]]]
    assert any(records[1]["_id"] in line and "1 example" in line for line in caplog.messages)


def test_hub_offline_fails_at_once_with_what_to_do():
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "latentqa.cli", "data", "stats", "--data", "hub:distractor/validation@main"],
        capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert "hotpotqa/hotpot_qa" in result.stderr and "--data DIR:distractor/validation" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - start < 20


def test_unknown_source_and_bad_hub_spec(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_examples(str(tmp_path / "nope.json"))
    with pytest.raises(DataError, match="CONFIG/SPLIT"):
        load_examples("hub:nonsense")
