import json

import pytest

from latentqa.config import ConfigError
from latentqa.data.examples import DataError
from latentqa.resources import SAMPLE_PATH
from latentqa.training.build import build_reader, load_split, resolve_model
from latentqa.training.config import load_config


def _config(tiny_models, tmp_path, *overrides):
    t5_dir, encoder_dir = tiny_models
    return load_config(None, [f"model.t5={t5_dir}", f"model.encoder={encoder_dir}", "latent.num_latents=4",
                              "latent.selector_heads=4", f"data.cache_dir={tmp_path / 'cache'}", *overrides])


def test_model_names_resolve_to_the_embedded_the_installed_or_the_given_model(tmp_path):
    assert resolve_model("google/flan-t5-base", str(tmp_path), "t5") == "google/flan-t5-base"
    minilm = resolve_model("minilm", str(tmp_path), "encoder")
    assert json.loads(open(f"{minilm}/config.json").read())["model_type"] == "bert"
    t5 = resolve_model("tiny", str(tmp_path), "t5")
    assert t5 == str(tmp_path / "tiny-models" / "t5")
    built = (tmp_path / "tiny-models" / "t5" / "config.json").stat().st_mtime_ns
    assert resolve_model("tiny", str(tmp_path), "encoder") == str(tmp_path / "tiny-models" / "encoder")
    assert (tmp_path / "tiny-models" / "t5" / "config.json").stat().st_mtime_ns == built  # built once


def test_a_model_that_cannot_be_loaded_is_one_config_error_naming_it(tiny_models, tmp_path):
    missing = tmp_path / "no-such-t5"
    with pytest.raises(ConfigError, match=f"cannot load '{missing}'.*Offline, point model.t5"):
        build_reader(_config(tiny_models, tmp_path, f"model.t5={missing}"))


def test_a_reader_is_built_with_its_section_and_the_run_token_limits(tiny_models, tmp_path):
    reader = build_reader(_config(tiny_models, tmp_path, "latent.num_latents=6", "data.max_question_tokens=20"))
    assert reader.kind == "latent" and reader.config.num_latents == 6 and reader.limits.max_question_tokens == 20
    baseline = build_reader(_config(tiny_models, tmp_path, "model.kind=baseline", "baseline.max_input_tokens=80"))
    assert baseline.kind == "baseline" and baseline.config.max_input_tokens == 80


def test_init_from_takes_the_folder_settings_and_refuses_what_it_would_ignore(trained_latent_run, tiny_models,
                                                                             tmp_path):
    best = trained_latent_run / "best"
    with pytest.raises(ConfigError, match=r"\['latent.num_latents', 'model.encoder', 'model.t5'\] would be ignored"):
        build_reader(_config(tiny_models, tmp_path, f"model.init_from={best}", "latent.num_latents=16"))
    with pytest.raises(ConfigError, match="holds a latent reader, but model.kind is baseline"):
        build_reader(load_config(None, ["model.kind=baseline", f"model.init_from={best}"]))
    # the folder's own settings may be repeated; the run's token limits replace the folder's
    reader = build_reader(load_config(None, [f"model.init_from={best}", "latent.num_latents=4",
                                             "data.max_question_tokens=24"]))
    assert reader.config.num_latents == 4 and reader.limits.max_question_tokens == 24


def test_a_split_is_limited_and_an_empty_file_is_refused_naming_it(tiny_models, tmp_path):
    config = _config(tiny_models, tmp_path, "data.train_limit=3")
    reader = build_reader(config)
    examples, features = load_split(config.data, reader, "train")
    assert len(examples) == 3 and len(features) == 3
    assert [e.id for e in examples] == [r["_id"] for r in json.loads(SAMPLE_PATH.read_text())[:3]]
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(DataError, match=f"{empty}: holds no examples"):
        load_split(_config(tiny_models, tmp_path, f"data.validation={empty}").data, reader, "validation")
