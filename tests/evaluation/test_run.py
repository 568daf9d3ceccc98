import json

import pytest

from latentqa.cli import main
from latentqa.evaluation.predictions import read_predictions


@pytest.mark.slow
def test_predict_then_score_on_the_shipped_sample(trained_latent_run, sample_path, sample_examples, tmp_path, capsys):
    pred = tmp_path / "pred.json"
    assert main(["predict", "--model", str(trained_latent_run / "best"), "--data", str(sample_path), "--out",
                 str(pred), "--max-new-tokens", "4", "--sp-top-k", "3", "--cache-dir", str(tmp_path)]) == 0
    answers, sp = read_predictions(pred, [ex.id for ex in sample_examples])
    assert set(answers) == {ex.id for ex in sample_examples}  # every example answered, ids from the data
    assert all(len(facts) == 3 for facts in sp.values())
    for ex in sample_examples:
        assert all(tuple(f) in set(ex.sentence_keys()) for f in sp[ex.id])
    capsys.readouterr()
    assert main(["score", "--gold", str(sample_path), "--pred", str(pred), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["count"] == 53 and metrics["missing_answer"] == 0 and metrics["sp_f1"] is not None


@pytest.mark.slow
def test_eval_writes_report_and_every_plot(trained_latent_run, sample_path, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(trained_latent_run / "best"), "--data", str(sample_path), "--out-dir",
                 str(out), "--limit", "12", "--max-new-tokens", "4", "--cache-dir", str(tmp_path)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"predictions.json", "metrics.json", "report.md", "answers_by_group.png", "attention.png",
            "training.png"} <= names
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["count"] == 12 and metrics["reader"] == "latent"
    assert metrics["model"] == str(trained_latent_run / "best") and metrics["latents"] == 4  # all it has
    assert set(metrics["groups"]) == {"context tokens", "answer past token 512", "support past token 512", "type",
                                      "level"}
    assert sum(g["n"] for g in metrics["groups"]["type"].values()) == 12
    places = metrics["groups"]["answer past token 512"]
    assert set(places) <= {"yes", "no", "yes/no", "not in context"} and sum(g["n"] for g in places.values()) == 12
    assert all("joint_f1" in g for g in places.values())  # the latent reader predicts facts: joint scores too
    report = (out / "report.md").read_text()
    assert "## Scores by support past token 512" in report and "![attention](attention.png)" in report

    capsys.readouterr()
    assert main(["compare", str(out), str(out), "--out", str(tmp_path / "compare.png")]) == 0
    table = capsys.readouterr().out
    assert "joint_f1" in table and (tmp_path / "compare.png").exists()


@pytest.mark.slow
def test_baseline_predicts_answers_only(tiny_baseline, sample_path, tmp_path, capsys):
    tiny_baseline.save_pretrained(tmp_path / "baseline")
    pred = tmp_path / "pred.json"
    assert main(["predict", "--model", str(tmp_path / "baseline"), "--data", str(sample_path), "--out", str(pred),
                 "--limit", "5", "--max-new-tokens", "3", "--cache-dir", str(tmp_path)]) == 0
    assert "sp" not in json.loads(pred.read_text())
    capsys.readouterr()
    assert main(["score", "--gold", str(sample_path), "--pred", str(pred)]) == 0
    out = capsys.readouterr()
    assert "sp_f1          absent" in out.out and "48 answer(s)" in out.err


def test_bad_prediction_file_gets_one_line(sample_path, tmp_path, capsys):
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"answer": {"not-an-id": "x"}}))
    assert main(["score", "--gold", str(sample_path), "--pred", str(pred)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(pred) in err and "not-an-id" in err


def test_missing_reader_folder_is_a_clear_error(sample_path, tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "nope"), "--data", str(sample_path), "--out",
                 str(tmp_path / "p.json")]) == 2
    assert "not a reader folder" in capsys.readouterr().err
