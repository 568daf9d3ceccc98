"""`latentqa bench-scale`: synthetic corpora that grow by prefix, real indexes built and queried in processes of
their own, growth fitted as a power of N."""
import json
import math

import pytest

from latentqa.benchmark.scale import FULLWIKI_PARAGRAPHS, SyntheticCorpus, fit_power
from latentqa.cli import main
from latentqa.index.links import title_links


@pytest.fixture(scope="module")
def corpus():
    return SyntheticCorpus()


def test_a_paragraph_is_the_same_whatever_the_corpus_size(corpus):
    again = SyntheticCorpus()
    assert [corpus.paragraph(i) for i in (0, 7, 12_345, 4_999_999)] == \
           [again.paragraph(i) for i in (0, 7, 12_345, 4_999_999)]
    assert corpus.paragraph(7) != corpus.paragraph(8)
    assert SyntheticCorpus(seed=1).paragraph(7) != corpus.paragraph(7)


def test_titles_are_unique_and_every_paragraph_but_the_first_links_to_an_earlier_one(corpus):
    paragraphs = [corpus.paragraph(i) for i in range(300)]
    assert len({p.title for p in paragraphs}) == 300
    assert len({corpus.title(i) for i in range(0, FULLWIKI_PARAGRAPHS, 997)}) == len(range(0, FULLWIKI_PARAGRAPHS, 997))
    indptr, indices = title_links(paragraphs)
    named = [set(indices[indptr[row]:indptr[row + 1]].tolist()) for row in range(300)]
    assert not named[0]
    assert all(any(other < row for other in named[row]) for row in range(1, 300))
    shapes = {tuple(len(s.split()) for s in p.sentences) for p in paragraphs}
    assert len(shapes) > 50  # sentence lengths drawn from many sample paragraphs, not one


def test_fit_power_recovers_a_power_law_and_carries_it():
    sizes = [10_000, 100_000, 1_000_000]
    fit = fit_power(sizes, [3.0 * n ** 0.5 for n in sizes])
    assert fit["slope"] == pytest.approx(0.5, abs=1e-3)
    assert fit["fullwiki"] == pytest.approx(3.0 * FULLWIKI_PARAGRAPHS ** 0.5, rel=1e-3)
    assert fit_power([10, 100], [0.0, 0.0]) == {"slope": None, "fullwiki": None}


@pytest.mark.slow
def test_bench_scale_builds_and_queries_each_size(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench-scale", "--sizes", "60", "120", "--queries", "8", "--encoder-paragraphs", "4",
                 "--compress-above", "300", "--grow", "0.25", "--out-dir", str(out)]) == 0
    results = json.loads((out / "bench-scale.json").read_text())
    small, large = results["sizes"]
    assert (small["n"], large["n"]) == (60, 120) and small["paragraphs"] == 60 and large["paragraphs"] == 120
    assert large["windows"] > small["windows"] >= 60
    assert large["vectors_compressed"] and not small["vectors_compressed"]  # more than 300 windows at 120
    assert 1.5 < large["bytes"] / small["bytes"] < 2.5  # disk grows with the paragraphs
    for row in results["sizes"]:
        assert 0 < row["encoder_seconds"] < row["build_seconds"] and 0 < row["retrieval_seconds"] < row["build_seconds"]
        assert 0 < row["query_p50_ms"] <= row["query_p99_ms"] and row["queries"] == 8
        assert row["build_peak_rss_mb"] > 100 and row["query_anon_mb"] > 0
        assert row["query_rss_mb"] == pytest.approx(row["query_anon_mb"] + row["query_file_mb"])
    for row, added in zip(results["sizes"], (15, 30)):  # grown by a quarter: only the new paragraphs encoded
        assert row["grown"]["added"] == added and row["grown"]["paragraphs"] == row["n"] + added
        assert 0 < row["grown"]["retrieval_seconds"] < row["grown"]["build_seconds"]
    assert not list(out.glob("index-*")) and not list(out.glob("corpus-*"))  # removed once measured
    disk = results["fits"]["bytes"]
    assert disk["slope"] == pytest.approx(math.log(large["bytes"] / small["bytes"]) / math.log(2), abs=1e-3)
    assert results["real_encoder"]["paragraphs"] == 4 and results["real_encoder"]["paragraphs_per_s"] > 0
    assert (out / "bench-scale.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "slope" in printed and "5,233,329" in printed and "assumption:" in printed


def test_bench_scale_refuses_a_format_it_cannot_store_before_any_work(tmp_path, capsys):
    assert main(["bench-scale", "--sizes", "100", "--states", "int9", "--out-dir", str(tmp_path / "b")]) == 2
    assert "--states" in capsys.readouterr().err and not (tmp_path / "b").exists()
