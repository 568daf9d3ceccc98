import json
import os

import pytest

from latentqa.benchmark.run import CONTENDERS
from latentqa.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end_in_quick_mode(tmp_path, capsys):
    assert main(["demo", "--quick", "--out-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "baseline" in table and "latent" in table and "chance 0.125" in table and "fact past word piece 512" in table
    results = json.loads((tmp_path / "results.json").read_text())
    for name in ("baseline", "latent"):
        r = results["readers"][name]
        assert r["n_fact_in_input"] + r["n_fact_cut_off"] == results["test_examples"] == 36
        assert r["n_fact_in_input"] == results["fact_in_baseline_input"] > 0
        past = [b for b in r["em_by_position"] if int(b.split("-")[0]) >= results["cut"]]
        assert r["n_past_cut"] == sum(r["n_by_position"][b] for b in past) > 0
        assert r["em_past_cut"] == pytest.approx(
            sum(r["em_by_position"][b] * r["n_by_position"][b] for b in past) / r["n_past_cut"])
    # Three short epochs teach no answers (EM is not claimed here), but the support loss already points the
    # attention at the fact sentence: far above picking one of a context's ~40 sentences at random (0.33 measured).
    test = json.loads((tmp_path / "task" / "test.json").read_text())
    chance = sum(1 / sum(len(sentences) for _, sentences in ex["context"]) for ex in test) / len(test)
    assert chance < 0.05 and results["readers"]["latent"]["sp_em"] > 5 * chance
    for png in ("em_by_position.png", "attention_latent.png", "training_latent.png", "training_baseline.png"):
        assert (tmp_path / png).stat().st_size > 10_000
    assert "![EM by position](em_by_position.png)" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_bench_quick_writes_every_contender_with_spreads(tmp_path, capsys):
    assert main(["bench", "--quick", "--lengths", "256", "--repeats", "3", "--modes", "--out-dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "bench.json").read_text())
    machine = results["machine"]
    assert results["repeats"] == 3 and all(len(v) == 3 for v in results["lengths"]["256"]["seconds_per_repeat"].values())
    assert machine["cpu_cores"] == os.cpu_count() and machine["torch_threads"] >= 1 and machine["torch"]
    figures = results["lengths"]["256"]
    assert figures["context_tokens"] == 256  # the nominal length is the measured one
    for name in CONTENDERS:
        f = figures[name]
        for key in ("train_step_s", "generate_s"):
            assert 0 < f[key]["min"] <= f[key]["median"] <= f[key]["max"]
        assert f["train_examples_per_s"] == pytest.approx(1 / f["train_step_s"]["median"])
        assert (f["peak_memory_mb"] is not None) == (machine["device"] == "cuda")  # measured on CUDA only
    assert set(figures["ratios"]) == {"train_vs_full", "train_time_vs_512", "generate_vs_full", "train_vs_fid",
                                      "generate_vs_fid"}
    for ratio in figures["ratios"].values():  # paired per repeat, so their median is not a ratio of medians
        assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"]
    assert set(figures["latent_forward_s"]) == {"encoder", "selector", "t5"}
    assert 0 < results["data"]["collate_share_of_step"] < 1
    assert "WordPiece" in results["data"]["tokenizers"]["context"]
    assert isinstance(results["wide_spreads"], list)
    from latentqa.benchmark.modes import MODES

    modes = results["modes"]
    assert modes["context_tokens"] == 256 and all(len(v) == 3 for v in modes["seconds_per_repeat"].values())
    for name in MODES:
        assert 0 < modes[name]["train_vs_none"]["min"] <= modes[name]["train_vs_none"]["max"]
    assert modes["none"]["train_vs_none"] == {"median": 1.0, "min": 1.0, "max": 1.0}
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "train/full" in out and "median (min-max)" in out and machine["name"] in out and "latents/cached" in out


def test_interleaved_timing_rotates_the_order():
    from latentqa.benchmark.timing import interleaved

    calls = []
    tasks = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    seconds = interleaved(tasks, warmup=1, repeats=3, sync=lambda: None)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert all(len(v) == 3 for v in seconds.values())


def test_bench_contexts_have_exactly_the_nominal_length():
    import numpy as np

    from latentqa.benchmark.run import fid_collate, synthetic_rows

    for length in (256, 512, 1000, 2048, 4096):
        row = synthetic_rows(length, 1, np.random.default_rng(0), vocab=30000)[0]
        assert len(row["context_ids"]) == len(row["sentence_index"]) == len(row["support"]) == length
        sizes = np.bincount(row["sentence_index"])
        assert len(sizes) == 40 and sizes.max() - sizes.min() <= 1
        assert fid_collate([row])["passage_mask"].sum() == length + 10 * 32  # every paragraph with its question


def test_many_facts_demo_gives_question_aware_readers_the_scaled_bias_and_8_epochs(tmp_path, tiny_models):
    """Each latent reader of `demo --facts K` builds (its settings pass the reader's own checks); only the
    question-aware ones read the lexical bias, at the demo's scale, and the latent readers train twice as long
    as on the one-fact task."""
    from latentqa.demo.run import LEXICAL_SCALE, demo_configs, demo_epochs
    from latentqa.readers.latent import CONDITIONING
    from latentqa.training.build import build_reader

    epochs = demo_epochs(quick=False, full=False, facts=4)
    assert epochs == {"baseline": 4, "latent": 8} and demo_epochs(quick=False, full=False)["latent"] == 4
    t5_dir, encoder_dir = tiny_models
    files = {"train": "train.json", "validation": "validation.json"}
    configs = demo_configs(tmp_path, files, t5_dir, str(encoder_dir), epochs, CONDITIONING)
    assert list(configs) == ["baseline", "latent-none", "latent-latents", "latent-encoder"]
    for mode in CONDITIONING:
        config = configs[f"latent-{mode}"]
        assert config.train.epochs == 8
        reader = build_reader(config.model, str(tmp_path))
        aware = mode != "none"
        assert (reader.lexical_bias is not None) == aware
        assert reader.config.selector_lexical_scale == (LEXICAL_SCALE if aware else 1.0)
