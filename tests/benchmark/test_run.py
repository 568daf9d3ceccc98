"""`latentqa bench`: every contender timed side by side, as ratios with their spread, reusing the real readers."""
import json
import os

import pytest

from latentqa.benchmark.run import CONTENDERS
from latentqa.benchmark.timing import is_wide
from latentqa.cli import main


@pytest.mark.slow
def test_bench_quick_writes_every_contender_with_spreads(tmp_path, capsys):
    assert main(["bench", "--quick", "--lengths", "256", "--repeats", "3", "--modes", "--latents", "2", "8",
                 "--out-dir", str(tmp_path)]) == 0
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
        assert (f["peak_memory_mb"] is not None) == (machine["device"] == "cuda")  # measured on CUDA only
    assert set(figures["ratios"]) == {"train_vs_full", "train_time_vs_512", "generate_vs_full", "train_vs_fid",
                                      "generate_vs_fid"}
    for ratio in figures["ratios"].values():  # paired per repeat, so their median is not a ratio of medians
        assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"]
    assert set(figures["latent_forward_s"]) == {"encoder", "selector", "t5"}
    assert 0 < results["data"]["collate_share_of_step"] < 1
    assert "WordPiece" in results["data"]["tokenizers"]["context"]
    wide = [name for name, ratio in figures["ratios"].items() if is_wide(ratio)]
    assert results["wide_spreads"] == ([f"256 tokens: {', '.join(wide)}"] if wide else [])
    from latentqa.benchmark.modes import MODES

    modes = results["modes"]
    assert modes["context_tokens"] == 256 and all(len(v) == 3 for v in modes["seconds_per_repeat"].values())
    for name in MODES:
        assert 0 < modes[name]["train_vs_none"]["min"] <= modes[name]["train_vs_none"]["max"]
    latents = results["latents"]
    assert latents["counts"] == [2, 8] and all(len(v) == 3 for v in latents["seconds_per_repeat"].values())
    assert latents["8"]["speedup_vs_largest"]["median"] == 1.0 and latents["2"]["generate_s"]["median"] > 0
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "train/full" in out and "median (min-max)" in out and machine["name"] in out and "latents/cached" in out \
        and "speed vs k=8" in out


def test_bench_contexts_have_exactly_the_nominal_length():
    import numpy as np

    from latentqa.benchmark.run import fid_collate, synthetic_rows

    for length in (256, 512, 1000, 2048, 4096):
        row = synthetic_rows(length, 1, np.random.default_rng(0), vocab=30000)[0]
        assert len(row["context_ids"]) == len(row["sentence_index"]) == len(row["support"]) == length
        sizes = np.bincount(row["sentence_index"])
        assert len(sizes) == 40 and sizes.max() - sizes.min() <= 1
        assert fid_collate([row])["passage_mask"].sum() == length + 10 * 32  # every paragraph with its question


def test_bench_rows_collate_like_feature_rows(tiny_latent):
    import numpy as np

    from latentqa.benchmark.run import synthetic_rows

    vocab = min(tiny_latent.t5.config.vocab_size, tiny_latent.encoder.config.vocab_size)
    rows = synthetic_rows(256, 2, np.random.default_rng(0), vocab=vocab)
    batch = tiny_latent.collator()(rows)  # every column the latent reader's batches carry
    assert batch["answer_start"].sum() == batch["answer_end"].sum() == 2 and (batch["answer_type"] == 0).all()
    assert (batch["token_end"] > batch["token_start"])[batch["context_mask"]].all()


def test_the_bench_cuts_the_baseline_input_without_changing_the_reader(tiny_baseline):
    import copy

    import numpy as np

    from latentqa.benchmark.run import baseline_batch, synthetic_rows

    rows = synthetic_rows(512, 2, np.random.default_rng(0), vocab=len(tiny_baseline.t5_tokenizer))
    config, weights = copy.deepcopy(tiny_baseline.config), copy.deepcopy(tiny_baseline.state_dict())
    cut, whole = baseline_batch(tiny_baseline, rows, 128), baseline_batch(tiny_baseline, rows, None)
    assert cut["input_ids"].shape[1] == 128 and whole["input_ids"].shape[1] > 512
    assert tiny_baseline.config == config
    assert all(v.equal(weights[k]) for k, v in tiny_baseline.state_dict().items())
