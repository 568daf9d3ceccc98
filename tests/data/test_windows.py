import numpy as np
import pytest

from latentqa.data.windows import window_spans


def _layout(paragraph_sentence_lengths):
    """sentence_index per token and sentence_paragraph per sentence for [[len, len], [len], ...]."""
    sentence_paragraph = [p for p, lengths in enumerate(paragraph_sentence_lengths) for _ in lengths]
    lengths = [n for lengths in paragraph_sentence_lengths for n in lengths]
    return np.repeat(np.arange(len(lengths)), lengths), sentence_paragraph


def _check_cover(spans, length, capacity):
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, disjoint
    assert all(0 < end - start <= capacity for start, end in spans)


def test_whole_paragraphs_are_packed_greedily():
    index, para = _layout([[3, 3], [4], [5, 1], [2]])  # paragraphs of 6, 4, 6, 2 tokens
    spans = window_spans(index, para, capacity=10)
    assert spans == [(0, 10), (10, 18)]
    _check_cover(spans, 18, 10)


def test_long_paragraph_splits_at_sentence_boundaries():
    index, para = _layout([[2], [4, 4, 4], [3]])  # the middle paragraph (12) exceeds the window (9)
    spans = window_spans(index, para, capacity=9)
    assert spans == [(0, 2), (2, 10), (10, 17)]  # cut after sentence 2 of the long paragraph
    _check_cover(spans, 17, 9)


def test_sentence_longer_than_a_window_is_cut_at_the_edge():
    index, para = _layout([[25]])
    assert window_spans(index, para, capacity=10) == [(0, 10), (10, 20), (20, 25)]


@pytest.mark.parametrize("seed", range(5))
def test_random_layouts_are_always_covered(seed):
    rng = np.random.default_rng(seed)
    layout = [rng.integers(1, 40, size=rng.integers(1, 6)).tolist() for _ in range(10)]
    index, para = _layout(layout)
    _check_cover(window_spans(index, para, capacity=50), len(index), 50)


def test_empty_context_has_no_windows():
    assert window_spans([], [], capacity=10) == []


@pytest.mark.parametrize("packing,expected", [
    ("paragraph", [(0, 6), (6, 10), (10, 16), (16, 18)]),
    ("sentence", [(0, 3), (3, 6), (6, 10), (10, 15), (15, 16), (16, 18)]),
])
def test_one_paragraph_or_one_sentence_per_window(packing, expected):
    index, para = _layout([[3, 3], [4], [5, 1], [2]])
    assert window_spans(index, para, capacity=10, packing=packing) == expected
    long, long_para = _layout([[2], [4, 4, 4], [12]])  # a paragraph and a sentence longer than the window (9)
    spans = window_spans(long, long_para, capacity=9, packing=packing)
    _check_cover(spans, 26, 9)
    assert (2, 10) in spans if packing == "paragraph" else (2, 6) in spans
    assert (14, 23) in spans and (23, 26) in spans  # the long sentence cut at the window edge
