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
