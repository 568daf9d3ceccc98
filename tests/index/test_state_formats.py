"""An index in each stored-state format (`latentqa index --states`): int8 and a full-width projection answer a tiny
reader's questions with the fp16 index's supporting facts; a smaller projection stores fewer bytes; a format the
reader cannot read, a truncated shard and a damaged projection are each named in one line, and the next build
repairs them; an index keeps the format it was built in."""
import shutil

import numpy as np
import pytest

import latentqa
from latentqa.data.corpus import load_corpus
from latentqa.index.build import build_index
from latentqa.index.store import HEADER_FILE, PROJECTION_FILE, IndexFolderError, IndexStore

WIDTH = 64  # the tiny encoder's


@pytest.fixture(scope="module")
def indexes(index_reader_dir, sample_path, tmp_path_factory):
    """The first 60 paragraphs of the sample in each format, 25 paragraphs a shard."""
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    corpus = load_corpus(str(sample_path))[0][:60]
    root = tmp_path_factory.mktemp("formats")
    built = {}
    for name in ("fp16", "int8", f"int8-pca{WIDTH}", "int8-pca8", "int4-pca16"):
        build_index(reader, corpus, root / name, reader_name=str(index_reader_dir), shard_paragraphs=25,
                    states=name, progress=False)
        built[name] = root / name
    return built


def states_bytes(directory) -> int:
    store = IndexStore(directory)
    return sum(shard.get_slice(name).get_shape()[0] * int(np.prod(shard.get_slice(name).get_shape()[1:]))
               * {"F16": 2, "I8": 1, "U8": 1}[shard.get_slice(name).get_dtype()]
               for shard, _, _ in store._shards for name in store.format.stored_tensors())


@pytest.mark.parametrize("name", ["int8", f"int8-pca{WIDTH}"])
def test_a_compressed_index_answers_with_the_fp16_index_s_supporting_facts(indexes, index_reader_dir,
                                                                           sample_examples, name):
    fp16 = latentqa.load_reader(index_reader_dir, cache_mb=0, index=indexes["fp16"], top_k=6)
    small = latentqa.load_reader(index_reader_dir, cache_mb=0, index=indexes[name], top_k=6)
    for example in sample_examples[:6]:
        want, got = fp16.answer(example.question, max_new_tokens=4), small.answer(example.question, max_new_tokens=4)
        assert [h.title for h in got.retrieved] == [h.title for h in want.retrieved]  # the same vectors
        assert got.supporting_facts == want.supporting_facts
        np.testing.assert_allclose([s for *_, s in got.sentence_scores], [s for *_, s in want.sentence_scores],
                                   atol=0.05)
    assert small.reader.state_cache.stats()["index_misses"] == 0


def test_smaller_formats_store_fewer_bytes(indexes):
    sizes = {name: states_bytes(directory) for name, directory in indexes.items()}
    tokens = sizes["fp16"] // (2 * WIDTH)
    assert sizes == {"fp16": tokens * WIDTH * 2, "int8": tokens * (WIDTH + 2), f"int8-pca{WIDTH}": tokens * (WIDTH + 2),
                     "int8-pca8": tokens * (8 + 2), "int4-pca16": tokens * (8 + 2)}
    assert (indexes["int8-pca8"] / PROJECTION_FILE).is_file() and not (indexes["int8"] / PROJECTION_FILE).exists()


def test_a_format_this_latentqa_cannot_read_is_refused_in_one_line(indexes, index_reader_dir, tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(indexes["int8"], copy)
    header = copy / HEADER_FILE
    header.write_text(header.read_text().replace('"int8"', '"int4"'))
    for opening in (lambda: IndexStore(copy), lambda: latentqa.load_reader(index_reader_dir, index=copy)):
        with pytest.raises(IndexFolderError) as err:
            opening()
        assert str(header) in str(err.value) and "'int4' is not one latentqa reads" in str(err.value)
        assert "\n" not in str(err.value)


def test_a_truncated_int8_shard_is_named_and_rebuilt_by_the_next_build(indexes, index_reader_dir, sample_path,
                                                                       tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(indexes["int8"], copy)
    shard = sorted((copy / "shards").iterdir())[1]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(IndexFolderError, match=f"{shard}: .*bytes, the manifest says"):
        IndexStore(copy)
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    report = build_index(reader, load_corpus(str(sample_path))[0][:60], copy, reader_name="r", shard_paragraphs=25,
                         progress=False)
    assert report.repaired == [shard.name] and report.added == 25
    assert_same_states(IndexStore(copy), IndexStore(indexes["int8"]))


def test_a_damaged_projection_is_named_then_fitted_again_with_every_shard(indexes, index_reader_dir, sample_path,
                                                                         tmp_path):
    copy = tmp_path / "index"
    shutil.copytree(indexes["int8-pca8"], copy)
    projection = copy / PROJECTION_FILE
    data = bytearray(projection.read_bytes())
    data[-4:] = b"\x00\x00\x80\x7f"  # the last float of the directions becomes +inf: same size, another hash
    projection.write_bytes(bytes(data))
    with pytest.raises(IndexFolderError, match=f"{projection}: missing or damaged"):
        IndexStore(copy)
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    report = build_index(reader, load_corpus(str(sample_path))[0][:60], copy, reader_name="r", shard_paragraphs=25,
                         progress=False)
    assert report.added == 60 and len(report.repaired) == 3  # fitted on the same first shard: the same index
    assert_same_states(IndexStore(copy), IndexStore(indexes["int8-pca8"]))


def test_an_index_keeps_the_format_it_was_built_in(indexes, index_reader_dir, sample_path):
    reader = latentqa.load_reader(index_reader_dir, cache_mb=0).reader
    corpus = load_corpus(str(sample_path))[0][:60]
    with pytest.raises(IndexFolderError, match="stored as int8, not fp16: build another index"):
        build_index(reader, corpus, indexes["int8"], reader_name="r", states="fp16", progress=False)
    assert build_index(reader, corpus, indexes["int8"], reader_name="r", progress=False).added == 0
    with pytest.raises(ValueError, match="128 directions of states 64 wide"):
        build_index(reader, corpus, indexes["int8"].parent / "too-wide", reader_name="r", states="int8-pca128",
                    progress=False)


def test_an_int4_index_reads_back_what_its_projection_keeps_to_int4_s_step(indexes):
    fp16, small = IndexStore(indexes["fp16"]), IndexStore(indexes["int4-pca16"])
    projection = small.projection
    assert projection.spread is not None and len(projection.spread) == 16
    for title, row in list(fp16.rows.items())[:10]:
        for full, read in zip(fp16.paragraph_states(row), small.paragraph_states(small.rows[title])):
            kept = projection.project(full) / projection.spread  # each token's codes, at int4's scale
            step = kept.abs().amax(dim=1, keepdim=True) / 7
            error = (projection.project(read) - projection.project(full)) / projection.spread
            assert (error.abs() <= step / 2 + 1e-2 * step).all()


def assert_same_states(a: IndexStore, b: IndexStore) -> None:
    """The same paragraphs with the same states, by title (a repaired shard's rows come last)."""
    assert sorted(a.rows) == sorted(b.rows)
    for title, row in a.rows.items():
        assert all(np.array_equal(x.numpy(), y.numpy())
                   for x, y in zip(a.paragraph_states(row), b.paragraph_states(b.rows[title])))
