"""configs/minilm-latent.yaml: the pretrained MiniLM preset trains on real HotpotQA questions, caching its states."""
import json
from pathlib import Path

import pytest

from latentqa.cli import main
from latentqa.training.config import load_config
from latentqa.readers.loading import load_reader_folder
from latentqa.resources import SAMPLE_PATH
from latentqa.training.trainer import train

ROOT = Path(__file__).resolve().parents[2]
PRESET = ROOT / "configs" / "minilm-latent.yaml"
# The shared real questions beside the checkout, where there are; else the shipped sample (53 of them).
SHARED = ROOT.parent / "shared" / "data" / "hotpotqa" / "real"


def test_preset_header_gives_its_command_and_its_data_exists_or_is_named():
    text = PRESET.read_text()
    assert text.startswith("# latentqa train --config configs/minilm-latent.yaml")
    config = load_config(PRESET)
    assert (config.model.encoder, config.latent.question_conditioning, config.latent.sp_scorer) == \
        ("minilm", "latents", "classifier")
    assert config.train.freeze_encoder and config.train.best_metric == "sp_f1"
    assert config.data.train.endswith("real/train.json") and config.data.validation.endswith("real/validation.json")


@pytest.mark.slow
def test_preset_trains_a_few_steps_on_real_questions_and_reuses_its_cached_states(tmp_path):
    train_file = SHARED / "train.json" if (SHARED / "train.json").exists() else SAMPLE_PATH
    overrides = [f"data.train={train_file}", f"data.validation={SAMPLE_PATH}", "data.train_limit=4",
                 "data.validation_limit=2", f"data.cache_dir={tmp_path / 'cache'}",
                 f"train.state_cache_dir={tmp_path / 'states'}", "train.epochs=1", "train.batch_size=2",
                 "eval.batch_size=2", "eval.max_new_tokens=2"]
    run = train(load_config(PRESET, [*overrides, f"train.output_dir={tmp_path / 'run'}"]))
    reader = load_reader_folder(run / "best")
    assert reader.sp_rule is not None and reader.config.question_conditioning == "latents"
    stored = sorted((tmp_path / "states").rglob("*.safetensors"))
    assert len(stored) >= 6  # 6 real contexts of ~1,400 word pieces: 3 or more windows each
    mtimes = [p.stat().st_mtime_ns for p in stored]
    train(load_config(PRESET, [*overrides, f"train.output_dir={tmp_path / 'again'}"]))
    assert sorted((tmp_path / "states").rglob("*.safetensors")) == stored  # read back, nothing recomputed
    assert [p.stat().st_mtime_ns for p in stored] == mtimes
    # prediction from the cached states gives what running the encoder gives
    args = ["predict", "--model", str(run / "best"), "--data", str(SAMPLE_PATH), "--limit", "2", "--max-new-tokens", "2",
            "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--out", str(tmp_path / "plain.json")]) == 0
    assert main([*args, "--out", str(tmp_path / "cached.json"), "--state-cache-dir", str(tmp_path / "states")]) == 0
    assert json.loads((tmp_path / "plain.json").read_text()) == json.loads((tmp_path / "cached.json").read_text())
