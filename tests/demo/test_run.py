import json
import os

import pytest

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
    assert results["readers"]["baseline"]["attention_on_fact"] is None
    assert chance < results["readers"]["latent"]["attention_on_fact"] <= 1  # above a uniform pick (0.05 measured)
    assert "selector attention on the asked fact: latent " in table
    for png in ("em_by_position.png", "attention_latent.png", "training_latent.png", "training_baseline.png"):
        assert (tmp_path / png).stat().st_size > 10_000
    assert "![EM by position](em_by_position.png)" in (tmp_path / "report.md").read_text()


def test_many_facts_demo_gives_question_aware_readers_the_scaled_bias_and_8_epochs(tmp_path, tiny_models):
    """Each latent reader of `demo --facts K` builds (its settings pass the reader's own checks); only the
    question-aware ones read the lexical bias, at the demo's scale, and the latent readers train twice as long
    as on the one-fact task."""
    from latentqa.demo.run import LEXICAL_SCALE, demo_configs, demo_epochs
    from latentqa.readers.latent import CONDITIONING
    from latentqa.training.build import build_reader

    epochs = demo_epochs(quick=False, full=False, facts=4)
    t5_dir, encoder_dir = tiny_models
    files = {"train": "train.json", "validation": "validation.json"}
    configs = demo_configs(tmp_path, files, t5_dir, str(encoder_dir), epochs, CONDITIONING)
    assert list(configs) == ["baseline", "latent-none", "latent-latents", "latent-encoder"]
    for mode in CONDITIONING:
        config = configs[f"latent-{mode}"]
        assert config.train.epochs == epochs["latent"] > demo_epochs(quick=False, full=False)["latent"]
        reader = build_reader(config)
        aware = mode != "none"
        assert (reader.lexical_bias is not None) == aware
        assert reader.config.selector_lexical_scale == (LEXICAL_SCALE if aware else 1.0)


def test_many_facts_demo_with_minilm_frozen_and_no_lexical_features(tmp_path, tiny_models):
    """`demo --facts K --encoder minilm --freeze-encoder --lexical-scale 0 --relevance`: no reader reads lexical
    evidence, so none is built; the question-aware ones get the learned relevance; the encoder is frozen and the
    question-free readers' states are cacheable."""
    from latentqa.data.features import LEXICAL_COLUMNS
    from latentqa.demo.run import demo_configs, demo_epochs
    from latentqa.readers.latent import CONDITIONING
    from latentqa.resources import SAMPLE_PATH
    from latentqa.training.build import build_reader, load_split

    files = {"train": SAMPLE_PATH, "validation": SAMPLE_PATH}  # the task's format: real HotpotQA JSON
    configs = demo_configs(tmp_path, files, tiny_models[0], "minilm", demo_epochs(False, False, 4), CONDITIONING,
                           lexical_scale=0, freeze_encoder=True, relevance=True)
    for mode in CONDITIONING:
        config = configs[f"latent-{mode}"]
        reader = build_reader(config)
        assert not reader.features.lexical and reader.lexical_bias is None and config.train.freeze_encoder
        assert (reader.relevance is not None) == (mode != "none")  # the question-aware readers' conditioning
        _, features = load_split(config.data, reader, "train", None)
        assert not set(LEXICAL_COLUMNS) & set(features.column_names), features.column_names
        reader.freeze_encoder()  # as the trainer does under train.freeze_encoder
        assert (reader.cache_refusal() is None) == (mode != "encoder")


@pytest.mark.slow
def test_nested_demo_tests_each_reader_at_every_count_it_can_read(tmp_path, capsys):
    assert main(["demo", "--quick", "--nested", "4", "2", "--out-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["counts"] == [2, 4]
    tested = {name: sorted(map(int, r["by_latents"])) for name, r in results["readers"].items()}
    assert tested == {"fixed-2": [2], "fixed-4": [4], "nested-draw": [2, 4], "nested-every": [2, 4]}
    for name in ("nested-draw", "nested-every"):
        saved = json.loads((tmp_path / name / "best" / "reader.json").read_text())["config"]
        assert saved["nested_latents"] == [2, 4] and saved["nested_training"] == name.split("-")[1]
    for r in results["readers"].values():
        assert r["train_seconds"] > 0
        for figures in r["by_latents"].values():
            assert 0 <= figures["em"] <= 1 and figures["n_past_cut"] > 0
    assert all(name in table for name in tested) and "k=2" in table and "k=4" in table
    assert (tmp_path / "em_by_latents.png").stat().st_size > 10_000


@pytest.mark.slow
def test_nested_demo_on_many_facts_trains_question_aware_readers_over_one_state_cache(tmp_path, capsys):
    """`demo --nested --facts K --freeze-encoder`: every reader is the many-facts demo's question-aware one, no
    every-k reader is trained, and the frozen encoder's states are computed once into a cache the readers share."""
    assert main(["demo", "--quick", "--nested", "4", "2", "--facts", "4", "--freeze-encoder", "--relevance",
                 "--out-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["facts"] == 4 and results["question_conditioning"] == "latents"
    assert sorted(results["readers"]) == ["fixed-2", "fixed-4", "nested-draw"]
    for name in results["readers"]:
        saved = json.loads((tmp_path / name / "best" / "reader.json").read_text())["config"]
        assert saved["question_conditioning"] == "latents" and saved["selector_relevance"]
        assert saved["selector_lexical"] and saved["selector_lexical_scale"] == 10.0
    windows = [w.stat().st_mtime for w in (tmp_path / "states").rglob("*.safetensors")]
    later_reader = min(f.stat().st_mtime for f in (tmp_path / "fixed-4").rglob("*") if f.is_file())
    assert windows and max(windows) < later_reader  # the second reader encoded nothing: all read from the cache
    assert "4 facts per context" in table and (tmp_path / "em_by_latents.png").stat().st_size > 10_000
