"""An index's store (`index/store.py`): its states are the encoder's states of that paragraph, readers whose states
are not the index's are refused, and its paragraphs and small tensors read back as written."""
import json
import shutil

import numpy as np
import pytest
import safetensors.torch
import torch

import latentqa
from latentqa.index.build import build_index, paragraph_windows
from latentqa.data.examples import Paragraph
from latentqa.index.store import IndexFolderError, IndexStore, StoredParagraphs
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


def test_windows_read_together_equal_windows_read_alone(built):
    """Runs of consecutive windows are read at once: across a shard's end, repeated and out of order, each window
    gets exactly its own states."""
    store = IndexStore(built[0])
    end = int(np.flatnonzero(np.diff(store.window_shard))[0])  # the first shard's last window
    windows = [end + 1, 3, end, end - 1, 3, 4, end + 2, 0, store.num_windows - 1]
    together = store.windows_states(windows)
    alone = [store.windows_states([w])[0] for w in windows]
    assert [len(s) for s in together] == [len(s) for s in alone]
    assert all(torch.equal(a, b) for a, b in zip(together, alone))
    assert not torch.equal(together[0][:1], together[2][:1])  # neighbours differ: a shifted read would show


def test_a_shard_rewritten_after_the_index_opened_is_refused_in_one_line(built, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(built[0], copy)
    store = IndexStore(copy)
    store.paragraph_states(0)  # read before: fine
    shard = store.shard_of(0)
    data = shard.read_bytes()
    shard.unlink()
    shard.write_bytes(data)  # the same bytes in a new file, as a rebuild writes it
    with pytest.raises(IndexFolderError, match="changed since the index was opened") as err:
        store.paragraph_states(0)
    assert str(shard) in str(err.value) and "\n" not in str(err.value)
    shard.unlink()
    with pytest.raises(IndexFolderError, match="unreadable shard"):
        store.paragraph_states(0)


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



def test_paragraphs_read_back_as_built_by_row_and_by_slice(built, corpus):
    store = IndexStore(built[0])
    assert len(store.paragraphs) == len(corpus) and store.paragraphs[:] == list(corpus)
    assert store.paragraphs[57] == corpus[57] and store.paragraphs[118:] == list(corpus[118:])
    assert store.rows[corpus[57].title] == 57


def test_stored_paragraphs_keep_any_text():
    stored = StoredParagraphs()
    stored.extend([["Zoë", ["Ça va.", ""]], ["Empty", []]])
    stored.extend([["日本", ["東京 is 🗼."]]])
    assert stored[:] == [Paragraph("Zoë", ("Ça va.", "")), Paragraph("Empty", ()), Paragraph("日本", ("東京 is 🗼.",))]
    assert stored[-1] == stored[2] and len(stored) == 3
    with pytest.raises(IndexError):
        stored[3]


def test_a_shard_whose_text_is_not_paragraphs_is_named(built, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(built[0], copy)
    shard = sorted((copy / "shards").iterdir())[0]
    tensors = safetensors.torch.load_file(str(shard))
    size = len(tensors["text"])
    numbers = json.dumps([1] * len(json.loads(bytes(tensors["text"].numpy())))).encode()  # as many items
    tensors["text"] = torch.frombuffer(bytearray(numbers.ljust(size)), dtype=torch.uint8)  # same bytes, same size
    safetensors.torch.save_file(tensors, str(shard))
    with pytest.raises(IndexFolderError, match=f"{shard}: damaged shard \\(its text is not paragraphs\\)"):
        IndexStore(copy)


def test_tensors_read_without_a_map_equal_safetensors_own(built):
    import safetensors.numpy

    from latentqa.index.store import read_tensors

    shard = sorted((built[0] / "shards").iterdir())[1]
    names = ("text", "window_paragraph", "keys", "offsets")
    expected = safetensors.numpy.load_file(str(shard))
    for name, found in read_tensors(shard, names).items():
        assert found.dtype == expected[name].dtype and np.array_equal(found, expected[name]), name
