"""A reader that reads its context states as an int8-pcaD index stores them (`latent.state_dims`): training fits
the projection before the first step and saves it with the reader; an index of that format stores through the
reader's own projection, so the reader answers from it as from an fp16 index."""
import numpy as np
import pytest
import torch

import latentqa
from latentqa.config import ConfigError
from latentqa.data.corpus import load_corpus
from latentqa.data.sources import load_examples
from latentqa.index.build import build_index
from latentqa.index.store import PROJECTION_FILE
from latentqa.readers.state_format import Projection, StoredStates
from latentqa.resources import SAMPLE_PATH
from latentqa.training.config import load_config
from latentqa.training.trainer import train
from tests.conftest import collate, tiny_reader

DIMS = 8


def test_reading_stored_states_again_changes_nothing_and_an_unfitted_projection_is_refused():
    torch.manual_seed(0)
    states = torch.randn(300, 32) @ torch.randn(32, 32)
    stored = StoredStates(32, DIMS)
    with pytest.raises(RuntimeError, match="int8-pca8: the projection is not fitted"):
        stored(states)
    figures = stored.fit(states)
    once = stored(states)
    assert figures["tokens"] == 300 and 0 < figures["relative_error"] < 1
    torch.testing.assert_close(stored(once), once, atol=1e-5, rtol=0)  # what an index of this format reads back
    # the round trip keeps what the first DIMS directions hold (to int8's rounding) and nothing else
    kept = Projection(stored.mean, stored.directions)
    assert (kept.restore(kept.project(states)) - once).norm() / once.norm() < 0.01


@pytest.fixture(scope="module")
def stored_reader_dir(tiny_models, sample_examples, tmp_path_factory):
    reader = tiny_reader(tiny_models, state_dims=DIMS)
    reader.fit_stored_states([collate(reader, sample_examples[:8])[0]])
    return reader.save_pretrained(tmp_path_factory.mktemp("stored") / "reader")


def test_an_index_of_the_reader_s_format_stores_through_its_projection_and_reads_as_fp16(
        stored_reader_dir, sample_path, sample_examples, tmp_path):
    reader = latentqa.load_reader(stored_reader_dir, cache_mb=0).reader
    assert bool(reader.stored_states.fitted)  # saved and loaded with the reader
    corpus = load_corpus(str(sample_path))[0][:60]
    for name in ("fp16", f"int8-pca{DIMS}"):
        build_index(reader, corpus, tmp_path / name, reader_name=str(stored_reader_dir), shard_paragraphs=25,
                    states=name, progress=False)
    projection = Projection.load(tmp_path / f"int8-pca{DIMS}" / PROJECTION_FILE)
    assert torch.equal(projection.directions, reader.stored_states.directions)
    assert torch.equal(projection.mean, reader.stored_states.mean)
    fp16 = latentqa.load_reader(stored_reader_dir, cache_mb=0, index=tmp_path / "fp16", top_k=6)
    small = latentqa.load_reader(stored_reader_dir, cache_mb=0, index=tmp_path / f"int8-pca{DIMS}", top_k=6)
    for example in sample_examples[:6]:
        want, got = fp16.answer(example.question, max_new_tokens=4), small.answer(example.question, max_new_tokens=4)
        assert got.supporting_facts == want.supporting_facts and got.answer == want.answer
        np.testing.assert_allclose([s for *_, s in got.sentence_scores], [s for *_, s in want.sentence_scores],
                                   atol=2e-3)


def test_training_fits_the_projection_on_the_first_training_questions_before_the_first_step(tiny_models, tmp_path):
    t5_dir, encoder_dir = tiny_models
    overrides = [f"model.t5={t5_dir}", f"model.encoder={encoder_dir}", "latent.num_latents=4",
                 "latent.selector_heads=4", f"latent.state_dims={DIMS}", "data.train_limit=6",
                 "data.validation_limit=2", f"data.cache_dir={tmp_path / 'cache'}", "train.epochs=1",
                 "train.batch_size=3", "eval.max_new_tokens=2", f"train.output_dir={tmp_path / 'run'}"]
    with pytest.raises(ConfigError, match="latent.state_dims .* train.freeze_encoder=true"):
        train(load_config(None, overrides))
    with pytest.raises(ConfigError, match="latent.state_dims=65: this reader keeps 64 values a context token"):
        tiny_reader(tiny_models, state_dims=65)
    run = train(load_config(None, [*overrides, "train.freeze_encoder=true", "train.state_cache_mb=0"]))
    reader = latentqa.load_reader(run / "best", cache_mb=0).reader
    trained = reader.stored_states.mean.clone(), reader.stored_states.directions.clone()
    reader.stored_states.fitted.fill_(False)
    # fitted again by hand on the 6 training questions, with the reader's frozen (unchanged) encoder
    reader.fit_stored_states([collate(reader, load_examples(str(SAMPLE_PATH))[0][:6])[0]])
    torch.testing.assert_close(reader.stored_states.mean, trained[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(reader.stored_states.directions, trained[1], atol=1e-3, rtol=0)


def test_an_int4_index_of_such_a_reader_fits_a_projection_of_its_own(stored_reader_dir, sample_path, tmp_path):
    reader = latentqa.load_reader(stored_reader_dir, cache_mb=0).reader  # reads through int8-pca8
    build_index(reader, load_corpus(str(sample_path))[0][:25], tmp_path / "index", reader_name="r",
                states=f"int4-pca{DIMS}", progress=False)
    projection = Projection.load(tmp_path / "index" / PROJECTION_FILE)
    assert projection.spread is not None and not torch.equal(projection.directions, reader.stored_states.directions)
