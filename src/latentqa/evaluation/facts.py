"""From per-sentence scores to supporting facts: the one implementation of the rule (`config.SpRule`).

With a paragraph-pair ranker (`readers.pairs`), the paragraph rule takes the paragraphs its scores rank first.
"""
from __future__ import annotations

from ..config import DEFAULT_TOP_K, SpRule
from ..data.examples import Example


def best_sentence_per_paragraph(keys: list[tuple[str, int]], scores: list[float]) -> dict[str, int]:
    """Each paragraph's (title's) best-scored sentence index, paragraphs ordered by that score (ties: reading
    order)."""
    best: dict[str, int] = {}
    for i in sorted(range(len(keys)), key=lambda i: -scores[i]):
        best.setdefault(keys[i][0], i)
    return best


def select_facts(example: Example, scores: list[float], rule: SpRule,
                 paragraph_scores: list[float] | None = None) -> list[list]:
    """Supporting facts `[[title, sent_id], ...]` in reading order from per-sentence scores by `rule` (a given
    one: see `SpRule.or_saved`); `paragraph_scores` (per sentence, its paragraph's) order the paragraphs for the
    paragraph rule where given."""
    keys = example.sentence_keys()
    if not keys:
        return []
    order = sorted(range(len(keys)), key=lambda i: -scores[i])
    if rule.paragraphs is not None:
        best = best_sentence_per_paragraph(keys, scores)
        titles = list(best)
        if paragraph_scores is not None:  # stable: equal paragraph scores keep the best-sentence order
            titles.sort(key=lambda t: -paragraph_scores[best[t]])
        titles = titles[:rule.paragraphs]
        chosen = {best[t] for t in titles}
        if rule.first:
            chosen |= {keys.index((t, min(i for title, i in keys if title == t))) for t in titles}
        if rule.threshold is not None:
            chosen |= {i for i in order if keys[i][0] in titles and scores[i] >= rule.threshold}
    elif rule.threshold is None:
        chosen = order[:rule.top_k or DEFAULT_TOP_K]
    else:
        chosen = [i for i in order if scores[i] >= rule.threshold] or order[:1]
    return [[keys[i][0], keys[i][1]] for i in sorted(chosen)]
