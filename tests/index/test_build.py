"""Building an index (`index/build.py`): built in interrupted parts it equals one built at once, a grown corpus
adds only its new paragraphs, two processes under torchrun build what one process builds."""
import json

import numpy as np
import pytest
import torch

import latentqa
from latentqa.index import build as build_module
from latentqa.index.build import build_index
from latentqa.index.store import IndexStore


def stored(directory):
    store = IndexStore(directory)
    return store, {p.title: [s.clone() for s in store.paragraph_states(row)] for row, p in enumerate(store.paragraphs)}


def test_interrupted_build_resumes_to_the_same_index(built, index_reader_dir, corpus, tmp_path, monkeypatch):
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    real, calls = build_module.encode_shard, []

    def dies_on_the_third(*args):
        calls.append(len(args[1]))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(build_module, "encode_shard", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        build_index(reader, corpus, tmp_path / "index", reader_name="r", shard_paragraphs=40, states="fp16",
                    progress=False)
    assert len(IndexStore(tmp_path / "index")) == 80  # two shards kept, the third never written
    calls.clear()
    monkeypatch.setattr(build_module, "encode_shard", lambda *args: (calls.append(len(args[1])), real(*args))[1])
    report = build_index(reader, corpus, tmp_path / "index", reader_name="r", shard_paragraphs=40, states="fp16",
                         progress=False)
    assert calls == [40] and report.added == 40 and report.paragraphs == 120  # only what was missing

    (store_a, states_a), (store_b, states_b) = stored(built[0]), stored(tmp_path / "index")
    assert [p for p in store_a.paragraphs] == [p for p in store_b.paragraphs] == corpus
    assert all(len(states_a[t]) == len(states_b[t]) and all(torch.equal(x, y) for x, y in zip(states_a[t], states_b[t]))
               for t in states_a)
    assert np.array_equal(store_a.vectors(), store_b.vectors())


def test_a_grown_corpus_adds_only_its_new_paragraphs(index_reader_dir, corpus, tmp_path, monkeypatch):
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    first = build_index(reader, corpus[:50] + corpus[:10], tmp_path / "index", reader_name="r", shard_paragraphs=40,
                        progress=False)
    assert first.added == first.paragraphs == 50  # a title given twice is one paragraph
    real, encoded = build_module.encode_shard, []
    monkeypatch.setattr(build_module, "encode_shard",
                        lambda *args: (encoded.extend(p.title for p in args[1]), real(*args))[1])
    report = build_index(reader, corpus, tmp_path / "index", reader_name="r", shard_paragraphs=40, progress=False)
    assert encoded == [p.title for p in corpus[50:]] and report.added == 70
    store = IndexStore(tmp_path / "index")
    assert len(store) == 120 and len({p.title for p in store.paragraphs}) == 120
    assert build_index(reader, corpus, tmp_path / "index", reader_name="r", progress=False).added == 0


@pytest.mark.slow
def test_two_processes_build_the_index_one_process_builds(built, index_reader_dir, corpus, tmp_path):
    """torchrun --nproc_per_node 2 on CPU: each process encodes every other shard; the index equals the one built
    by one process (states to the CPU kernels' rounding: the processes run one thread each)."""
    import os
    import subprocess
    import sys

    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"title": p.title, "sentences": list(p.sentences)}) + "\n" for p in corpus))

    def torchrun(out, states):
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                 "--master_port", "29541", "-m", "latentqa.cli", "index", "--model",
                                 str(index_reader_dir), "--data", str(path), "--out", str(out), "--shard-paragraphs",
                                 "40", "--states", states],
                                capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, result.stderr[-3000:]

    torchrun(tmp_path / "index", "fp16")
    (one, one_states), (two, two_states) = stored(built[0]), stored(tmp_path / "index")
    assert one.paragraphs == two.paragraphs and np.array_equal(one._sorted_keys, two._sorted_keys)
    for title, states in one_states.items():
        for a, b in zip(states, two_states[title], strict=True):
            torch.testing.assert_close(a.float(), b.float(), atol=2e-3, rtol=2e-3)
    # a projected format: the main process fits the projection on the first shard before any process encodes
    torchrun(tmp_path / "pca", "int8-pca16")
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    build_index(reader, corpus, tmp_path / "pca-one", reader_name="r", shard_paragraphs=40, states="int8-pca16",
                progress=False)
    (one, one_states), (two, two_states) = stored(tmp_path / "pca-one"), stored(tmp_path / "pca")
    torch.testing.assert_close(one.projection.directions.abs(), two.projection.directions.abs(), atol=1e-3, rtol=0)
    for title, states in one_states.items():
        for a, b in zip(states, two_states[title], strict=True):
            torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)
    assert len(list((tmp_path / "index" / "shards").iterdir())) == 3



@pytest.mark.parametrize("every,entered", [(0.0, [0, 1, 2, 3, 3]), (3600.0, [0, 3])])
def test_the_manifest_enters_new_shards_every_few_seconds_not_after_each(index_reader_dir, corpus, tmp_path,
                                                                         monkeypatch, every, entered):
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    writes, real = [], build_module.Manifest.write
    monkeypatch.setattr(build_module, "MANIFEST_SECONDS", every)
    monkeypatch.setattr(build_module.Manifest, "write", lambda self, d: (writes.append(len(self.shards)), real(self, d)))
    build_index(reader, corpus, tmp_path / "index", reader_name="r", shard_paragraphs=40, states="fp16", progress=False)
    assert writes == entered  # (the first: the new folder's empty manifest; the last: the build's final one)
    assert len(IndexStore(tmp_path / "index")) == 120
