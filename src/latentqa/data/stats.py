"""What a data source looks like to the context encoder: lengths and how much truncation would lose."""
from __future__ import annotations

from collections import Counter

import numpy as np

from .examples import Example

CUTS = (512, 1024)


def support_end(support: list[int]) -> int:
    """One past the last supporting token (0 when there is none): a cut before it loses support."""
    hits = np.flatnonzero(np.asarray(support, dtype=np.int8))
    return int(hits[-1]) + 1 if hits.size else 0


def data_stats(examples: list[Example], features) -> dict:
    """Counts, context length in context-encoder tokens, and the share of examples with support cut off."""
    lengths = np.array([len(ids) for ids in features["context_ids"]], dtype=np.int64)
    ends = np.array([support_end(s) for s in features["support"]], dtype=np.int64)
    with_support = ends > 0
    return {
        "examples": len(examples),
        "labelled": sum(ex.answer is not None for ex in examples),
        "context_tokens": {
            "mean": float(lengths.mean()) if lengths.size else 0.0,
            "p50": float(np.percentile(lengths, 50)) if lengths.size else 0.0,
            "p95": float(np.percentile(lengths, 95)) if lengths.size else 0.0,
            "max": int(lengths.max()) if lengths.size else 0,
        },
        "examples_with_support": int(with_support.sum()),
        # Share of the examples that have support tokens: a cut loses (part of) a supporting sentence.
        "lose_support_if_cut_at": {
            str(cut): float((ends[with_support] > cut).mean()) if with_support.any() else 0.0 for cut in CUTS
        },
        "types": dict(Counter(ex.type or "unknown" for ex in examples)),
        "levels": dict(Counter(ex.level or "unknown" for ex in examples)),
    }


def format_stats(stats: dict) -> str:
    ct = stats["context_tokens"]
    lines = [
        f"examples            {stats['examples']} ({stats['labelled']} labelled)",
        f"context tokens      mean {ct['mean']:.0f}  p50 {ct['p50']:.0f}  p95 {ct['p95']:.0f}  max {ct['max']}",
    ]
    for cut, share in stats["lose_support_if_cut_at"].items():
        lines.append(f"cut at {cut:>5} tokens loses a supporting sentence in {share:.0%} of "
                     f"{stats['examples_with_support']} examples with support")
    lines.append("types               " + ", ".join(f"{k} {v}" for k, v in sorted(stats["types"].items())))
    lines.append("levels              " + ", ".join(f"{k} {v}" for k, v in sorted(stats["levels"].items())))
    return "\n".join(lines)
