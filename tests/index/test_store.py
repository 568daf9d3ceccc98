"""An index's stored states (`index/store.py`): they are the encoder's states of that paragraph, and readers whose
states are not the index's are refused."""
import pytest
import torch

import latentqa
from latentqa.index.build import build_index, paragraph_windows
from latentqa.index.store import IndexFolderError, IndexStore
from latentqa.serving.pipeline import ReaderPipeline
from tests.conftest import tiny_reader


def test_stored_states_are_the_encoders_states_of_that_paragraph(built, index_reader_dir, corpus):
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    store = IndexStore(built[0])
    for row in (0, 57, 119):
        windows = paragraph_windows(reader, [store.paragraphs[row]])
        states = store.paragraph_states(row)
        assert len(states) == len(windows) == len(store.paragraphs[row].sentences)  # one window a sentence
        for (ids, _), saved in zip(windows, states):
            with torch.no_grad():
                live = reader.encoder(input_ids=torch.tensor([ids])).last_hidden_state[0]
            assert saved.dtype == torch.float32 and saved.shape == live.shape  # read back from fp16
            torch.testing.assert_close(saved.float(), live, atol=2e-3, rtol=2e-3)  # fp16 storage


def test_readers_whose_states_are_not_the_index_s_are_refused(built, tiny_models):
    assert ReaderPipeline(tiny_reader(tiny_models, seed=1), index=built[0]).retriever is not None  # same encoder
    other = tiny_reader(tiny_models)
    with torch.no_grad():
        other.encoder.embeddings.word_embeddings.weight[5, 0] += 0.01  # one weight: another encoder
    cases = {"another encoder": other, "greedy": tiny_reader(tiny_models, window_packing="greedy"),
             "encoder mode": tiny_reader(tiny_models, question_conditioning="encoder")}
    messages = {}
    for name, reader in cases.items():
        with pytest.raises(IndexFolderError) as err:
            ReaderPipeline(reader, index=built[0])
        messages[name] = str(err.value)
        assert "\n" not in messages[name] and str(built[0]) in messages[name]
    assert "encoder_fingerprint" in messages["another encoder"]
    assert "greedy" in messages["greedy"] and "'encoder'" in messages["encoder mode"]
    with pytest.raises(IndexFolderError, match="greedy"):
        build_index(cases["greedy"], [], built[0].parent / "other", reader_name="r", progress=False)

