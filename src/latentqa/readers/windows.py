"""Split a context of any length into encoder windows, paragraph-aligned.

The context encoder has a fixed number of positions (512 for DistilBERT); HotpotQA contexts reach 3,500 tokens.
Windows are packed greedily with *whole paragraphs*; a paragraph longer than a window is split at the last
sentence boundary that fits (at the window edge only when a single sentence is longer than a window).

Why paragraph-aligned and not overlapping: a HotpotQA paragraph is self-contained (its title opens every
sentence), so a token loses little by not seeing other paragraphs inside the encoder — the latent selector is
what reads across all of them. Overlap would encode tokens twice, costing compute and making a token's attention
mass ambiguous; with disjoint windows every context token has exactly one state.
"""
from __future__ import annotations

import numpy as np


def window_spans(sentence_index, sentence_paragraph, capacity: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) token spans covering the whole context, each at most `capacity` tokens.

    sentence_index: per token, its sentence; sentence_paragraph: per sentence, its paragraph.
    """
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
