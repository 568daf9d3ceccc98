"""The index the tests of tests/index/ share: the shipped sample's first 120 paragraphs, built once."""
import pytest

import latentqa
from latentqa.data.corpus import load_corpus
from latentqa.index.build import build_index


@pytest.fixture(scope="session")
def corpus(sample_path):
    return load_corpus(str(sample_path))[0][:120]


@pytest.fixture(scope="session")
def built(index_reader_dir, corpus, tmp_path_factory):
    """An index of the corpus built at once, 40 paragraphs a shard, in fp16: the states a reader's own fp16 cache
    holds, so that an answer from it can equal one from the paragraphs (the other formats: test_state_formats.py)."""
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    out = tmp_path_factory.mktemp("index") / "index"
    report = build_index(reader, corpus, out, reader_name=str(index_reader_dir), shard_paragraphs=40, states="fp16",
                         progress=False)
    return out, report

