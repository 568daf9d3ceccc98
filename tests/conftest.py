"""Shared fixtures: the shipped real sample and the embedded tiny models, built once per test session."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub: a missing model fails at once
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from latentqa.data.sources import load_examples  # noqa: E402
from latentqa.resources import SAMPLE_PATH  # noqa: E402


@pytest.fixture(scope="session")
def sample_path():
    return SAMPLE_PATH


@pytest.fixture(scope="session")
def sample_examples():
    examples, _ = load_examples(str(SAMPLE_PATH))
    return examples


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, sample_examples):
    """(t5_dir, encoder_dir) of the embedded tiny models."""
    from latentqa.assets import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("assets"), sample_examples)


@pytest.fixture(scope="session")
def tokenizers(tiny_models):
    from transformers import AutoTokenizer

    t5_dir, encoder_dir = tiny_models
    return AutoTokenizer.from_pretrained(t5_dir), AutoTokenizer.from_pretrained(encoder_dir)


@pytest.fixture
def tiny_latent(tiny_models):
    """A fresh tiny latent reader (tests may change it)."""
    from latentqa.readers.latent import LatentConfig, LatentReader

    import torch

    torch.manual_seed(0)
    t5_dir, encoder_dir = tiny_models
    return LatentReader.build(str(t5_dir), str(encoder_dir), LatentConfig(num_latents=8, selector_heads=4))


@pytest.fixture
def tiny_baseline(tiny_models):
    from latentqa.readers.baseline import BaselineConfig, BaselineReader

    return BaselineReader.build(str(tiny_models[0]), BaselineConfig(max_input_tokens=128))


def collate(reader, examples):
    """A batch of `examples` for `reader`, through the real feature and collator code, as the reader is fed."""
    from latentqa.data.features import load_features
    from latentqa.data.collate import IndexedRows

    features = load_features(examples, reader.features, question_tokenizer=reader.t5_tokenizer,
                             context_tokenizer=reader.context_tokenizer, cache_dir=None, progress=False)
    rows = IndexedRows(features)
    return reader.collator()([rows[i] for i in range(len(rows))]), features


@pytest.fixture(scope="session")
def trained_latent_run(tiny_models, tmp_path_factory):
    """A tiny latent reader trained for a few steps on the sample: its run folder (best reader in RUN/best)."""
    from latentqa.training.config import load_config
    from latentqa.training.trainer import train

    out = tmp_path_factory.mktemp("trained")
    t5_dir, encoder_dir = tiny_models
    config = load_config(None, [
        f"model.t5={t5_dir}", f"model.encoder={encoder_dir}", "latent.num_latents=4", "latent.selector_heads=4",
        "data.train_limit=8", "data.validation_limit=4", f"data.cache_dir={out / 'cache'}",
        f"train.output_dir={out / 'run'}", "train.epochs=2", "train.batch_size=4", "train.lr_latent=1e-3",
        "eval.max_new_tokens=4"])
    return train(config)


def tiny_reader(tiny_models, seed=0, **config):
    """A tiny latent reader an index can hold (question-aware latents, one sentence a window), in eval mode."""
    import torch

    from latentqa.readers.latent import LatentConfig, LatentReader

    torch.manual_seed(seed)
    t5_dir, encoder_dir = tiny_models
    settings = {"num_latents": 8, "selector_heads": 4, "question_conditioning": "latents",
                "window_packing": "sentence", **config}
    return LatentReader.build(str(t5_dir), str(encoder_dir), LatentConfig(**settings)).eval()


@pytest.fixture(scope="session")
def index_reader_dir(tiny_models, tmp_path_factory):
    """`tiny_reader` saved as a reader folder: the reader of the index tests."""
    return tiny_reader(tiny_models).save_pretrained(tmp_path_factory.mktemp("reader") / "reader")
