"""Split a context of any length into encoder windows, paragraph-aligned.

The context encoder has a fixed number of positions (512 for DistilBERT); HotpotQA contexts reach 3,500 tokens.
Windows are packed greedily with *whole paragraphs*; a paragraph longer than a window is split at the last
sentence boundary that fits (at the window edge only when a single sentence is longer than a window).

A frozen encoder trained on short texts (all-MiniLM-L6-v2) embeds a sentence far better on its own than inside a
window of 500 tokens (docs/real.md): `latent.window_packing` puts one paragraph or one sentence in each window instead.

Why paragraph-aligned and not overlapping: a HotpotQA paragraph is self-contained (its title opens every
sentence), so a token loses little by not seeing other paragraphs inside the encoder — the latent selector is
what reads across all of them. Overlap would encode tokens twice, costing compute and making a token's attention
mass ambiguous; with disjoint windows every context token has exactly one state.
"""
from __future__ import annotations

import numpy as np


PACKINGS = ("greedy", "paragraph", "sentence")


def window_spans(sentence_index, sentence_paragraph, capacity: int, packing: str = "greedy") -> list[tuple[int, int]]:
    """Contiguous [start, end) token spans covering the whole context, each at most `capacity` tokens.

    sentence_index: per token, its sentence; sentence_paragraph: per sentence, its paragraph. packing: 'greedy'
    (whole paragraphs packed as above), 'paragraph' (one paragraph per window) or 'sentence' (one sentence per
    window), each split as above where it is longer than a window.
    """
    if packing == "greedy":
        return _greedy_spans(sentence_index, sentence_paragraph, capacity)
    if packing not in PACKINGS:
        raise ValueError(f"window packing must be one of {PACKINGS}, got {packing!r}")
    sentences = np.asarray(sentence_index, dtype=np.int64)
    unit = sentences if packing == "sentence" else np.asarray(sentence_paragraph, dtype=np.int64)[sentences]
    bounds = [0, *(np.flatnonzero(np.diff(unit)) + 1).tolist(), len(sentences)] if len(sentences) else [0]
    return [(start + a, start + b) for start, end in zip(bounds, bounds[1:])
            for a, b in _greedy_spans(sentences[start:end], sentence_paragraph, capacity)]


def _greedy_spans(sentence_index, sentence_paragraph, capacity: int) -> list[tuple[int, int]]:
    if capacity < 1:
        raise ValueError(f"window capacity must be positive, got {capacity}")
    sentences = np.asarray(sentence_index, dtype=np.int64)
    length = len(sentences)
    if length == 0:
        return []
    paragraphs = np.asarray(sentence_paragraph, dtype=np.int64)[sentences]
    sentence_starts = np.flatnonzero(np.diff(sentences)) + 1
    paragraph_ends = [*(np.flatnonzero(np.diff(paragraphs)) + 1).tolist(), length]

    spans, start, paragraph_start = [], 0, 0
    for end in paragraph_ends:
        if end - start > capacity:
            if paragraph_start > start:  # close the window before this paragraph
                spans.append((start, paragraph_start))
                start = paragraph_start
            while end - start > capacity:  # the paragraph alone is too long: split it
                fits = sentence_starts[(sentence_starts > start) & (sentence_starts <= start + capacity)]
                cut = int(fits[-1]) if fits.size else start + capacity
                spans.append((start, cut))
                start = cut
        paragraph_start = end
    spans.append((start, length))
    return spans
