"""Title links kept across builds (`index/links.py`): a build reads new shards in full and kept ones only where
BM25's postings say a new title can be named, and always gives what reading every paragraph against every title
gives."""
import bm25s
import numpy as np
import pytest

from latentqa.data.examples import Paragraph
from latentqa.index import links
from latentqa.index.lexical import Lexical, stemmer
from latentqa.index.links import LINKS_DIR, LOG_FILE, build_links, title_links
from latentqa.index.retrieval import _document


@pytest.fixture(scope="module")
def paragraphs(sample_examples):
    seen = {p.title: p for ex in sample_examples for p in ex.paragraphs}
    found = list(seen.values())[:150]
    # a title of stopwords alone, named by an early paragraph; a title with a "(...)" named without it
    found[5] = Paragraph(found[5].title, found[5].sentences + ("They toured with The Who in 1970.",))
    found[7] = Paragraph(found[7].title, found[7].sentences + ("Its sound was like Alder's.",))
    return found + [Paragraph("The Who", ("An English rock band.",)), Paragraph("Alder (band)", ("A band.",))]


def lexical_over(paragraphs):
    model = bm25s.BM25()
    model.index(bm25s.tokenize([_document(p) for p in paragraphs], stopwords="en", stemmer=stemmer(),
                               show_progress=False), show_progress=False)
    return Lexical(model)


def shards_of(sizes, names):
    return [(name * 64, size) for name, size in zip(names, sizes)]


def build(directory, paragraphs, sizes, names):
    return build_links(directory, shards_of(sizes, names), paragraphs, lexical_over(paragraphs))


def assert_links_equal(got, paragraphs):
    want = title_links(paragraphs)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_the_reference_finds_names_as_whole_words_without_a_disambiguation(paragraphs):
    indptr, indices = title_links(paragraphs)
    named = lambda row: {paragraphs[r].title for r in indices[indptr[row]:indptr[row + 1]]}
    assert {"The Who", "Alder (band)"} <= named(5) | named(7)
    assert "The Who" in named(5) and "Alder (band)" in named(7)
    assert sum(len(named(row)) for row in range(len(paragraphs))) > 20  # the sample's own links too


def test_grown_in_two_runs_equals_built_at_once_and_reads_only_what_is_new(paragraphs, tmp_path, monkeypatch):
    directory = tmp_path / LINKS_DIR
    assert_links_equal(build(directory, paragraphs[:100], [50, 50], "ab"), paragraphs[:100])
    read = []
    real = links.text_words
    monkeypatch.setattr(links, "text_words", lambda p: (read.append(p.title), real(p))[1])
    grown = paragraphs[:-2]  # the stopwords-only title ("The Who") comes in a run of its own below

    def build_reading(paragraphs, sizes, names):
        read.clear()
        found = build(directory, paragraphs, sizes, names)
        titles = list(read)
        assert_links_equal(found, paragraphs)  # the reference reads every paragraph: after the count
        return titles

    read_grown = build_reading(grown, [50, 50, len(grown) - 100], "abc")
    new = {p.title for p in grown[100:]}
    old_read = [title for title in read_grown if title not in new]
    assert new <= set(read_grown) and 0 < len(old_read) < 20  # old paragraphs read where a new title may be named
    assert build_reading(grown, [50, 50, len(grown) - 100], "abc") == []  # nothing new: nothing read
    read_last = build_reading(paragraphs, [50, 50, len(grown) - 100, 2], "abcd")
    assert paragraphs[5].title in read_last and paragraphs[7].title in read_last  # "The Who", "Alder" in old text


def test_a_dropped_shard_leaves_its_links_and_rows_shift(paragraphs, tmp_path):
    directory = tmp_path / LINKS_DIR
    build(directory, paragraphs, [50, 50, len(paragraphs) - 100], "abc")
    kept = paragraphs[:50] + paragraphs[100:]
    assert_links_equal(build(directory, kept, [50, len(paragraphs) - 100], "ac"), kept)
    links.remove_unlisted(directory, shards_of([50, len(paragraphs) - 100], "ac"))
    assert sorted(p.name for p in directory.iterdir()) == sorted([LOG_FILE, "a" * 32 + ".safetensors",
                                                                  "c" * 32 + ".safetensors"])


def test_damaged_files_are_read_again(paragraphs, tmp_path):
    directory = tmp_path / LINKS_DIR
    build(directory, paragraphs[:100], [50, 50], "ab")
    (directory / ("a" * 32 + ".safetensors")).write_bytes(b"not safetensors")
    assert_links_equal(build(directory, paragraphs, [50, 50, len(paragraphs) - 100], "abc"), paragraphs)
    (directory / LOG_FILE).write_bytes(b"\x00" * 10)  # a new log: every shard's file is of another log
    assert_links_equal(build(directory, paragraphs, [50, 50, len(paragraphs) - 100], "abc"), paragraphs)
