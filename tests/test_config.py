import pytest

from latentqa.config import ConfigError, load_config


def test_presets_load_and_override(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for preset in sorted((root / "configs").glob("*.yaml")):
        config = load_config(preset)
        assert preset.read_text().startswith(f"# latentqa train --config configs/{preset.name}")
        assert config.train.output_dir
    real = load_config(root / "configs" / "latent-hotpotqa.yaml", ["train.lr_latent=3e-4", "model.num_latents=16"])
    assert real.train.lr_latent == 3e-4 and real.model.num_latents == 16
    assert (real.train.batch_size, real.train.epochs, real.train.lr_t5, real.train.lr_encoder) == (8, 3, 1e-5, 1e-5)
    assert load_config(root / "configs" / "baseline-hotpotqa.yaml").train.lr_t5 == 1e-4
    real.save(tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == real


@pytest.mark.parametrize("overrides, message", [
    (["train.epochs=many"], "train.epochs must be int"),
    (["train.lr_t5=fast"], "train.lr_t5 must be float"),
    (["train.cpu=maybe"], "train.cpu must be bool"),
    (["train.epochs=0"], "train.epochs must be at least 1"),
    (["train.nope=1"], "unknown field"),
    (["nope.x=1"], "unknown section"),
    (["model.kind=other"], "model.kind must be"),
    (["train.mixed_precision=fp8"], "mixed_precision"),
    (["epochs=1"], "section.field=value"),
    (["train.batch_size=null"], "cannot be null"),
])
def test_bad_configs_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [1, 2")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


@pytest.mark.parametrize("overrides, message", [
    (["model.num_latents=0"], "model.num_latents must be at least 1"),
    (["model.encoder_attention_dropout=1.5"], r"model.encoder_attention_dropout must be in \[0, 1\)"),
    (["model.kind=baseline", "model.max_input_tokens=4"], "model.max_input_tokens must be at least 8"),
])
def test_bad_reader_settings_name_the_field_before_any_model_loads(overrides, message, tmp_path):
    from latentqa.training.build import build_reader

    config = load_config(None, ["model.t5=no/such-model", *overrides])  # never reached: the settings fail first
    with pytest.raises(ConfigError, match=message):
        build_reader(config.model, str(tmp_path))
