import json

import pytest

from latentqa.benchmark.run import CONTENDERS
from latentqa.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end_in_quick_mode(tmp_path, capsys):
    assert main(["demo", "--quick", "--out-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "baseline" in table and "latent" in table and "chance 0.125" in table
    results = json.loads((tmp_path / "results.json").read_text())
    for name in ("baseline", "latent"):
        r = results["readers"][name]
        assert 0.0 <= r["em"] <= 1.0 and r["n_past_cut"] + r["n_before_cut"] == results["test_examples"] == 36
    for png in ("em_by_position.png", "attention.png", "training_latent.png", "training_baseline.png"):
        assert (tmp_path / png).stat().st_size > 10_000
    assert "![EM by position](em_by_position.png)" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_bench_quick_writes_every_contender(tmp_path, capsys):
    assert main(["bench", "--quick", "--lengths", "256", "--out-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "bench.json").read_text())
    figures = results["lengths"]["256"]
    for name in CONTENDERS:
        assert figures[name]["train_examples_per_s"] > 0 and figures[name]["generate_examples_per_s"] > 0
        assert figures[name]["peak_memory_mb"] is None  # CUDA only; CI has no GPU
    assert set(figures["ratios"]) >= {"train_vs_full", "train_time_vs_512", "generate_vs_full", "train_vs_fid",
                                      "generate_vs_fid"}
    assert set(figures["latent_forward_s"]) == {"encoder", "selector", "t5"}
    assert 0 < results["data"]["collate_share_of_step"] < 1
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    assert "train/full" in capsys.readouterr().out
