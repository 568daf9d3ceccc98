"""From per-sentence scores to supporting facts: the rule (`SpRule`) and its one implementation (`select_facts`).

A rule is top-k; a threshold (the best sentence always); or the best sentence of each of the best N paragraphs,
with their first sentences if `first` and their other sentences over a threshold if one is set (HotpotQA's facts
come from exactly 2 paragraphs, at least one from each, very often the first). With a paragraph-pair ranker
(`readers.pairs`), the paragraph rule takes the paragraphs its scores rank first.

A reader with sentence scores has its rule chosen on validation data by the trainer (`evaluation.sp_rule`) and
saved in its folder; predict, eval and serving use it unless they are given a rule of their own.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import ConfigError, at_least, option
from ..data.examples import Example

DEFAULT_TOP_K = 2  # with no rule given or saved


@dataclass(frozen=True)
class SpRule:
    top_k: int | None = option(None, "supporting facts per question: the k best-scored sentences (no rule set: the "
                                     "one saved with the reader, else 2)")
    threshold: float | None = option(None, "instead of top-k, every sentence scored at least this (the best one "
                                           "always); with paragraphs, those paragraphs' other sentences scored at "
                                           "least this")
    paragraphs: int | None = option(None, "instead of top-k, the best sentence of each of the N best paragraphs "
                                          "(HotpotQA has 2 gold paragraphs), with threshold also their other "
                                          "sentences scored at least that")
    first: bool = option(False, "with paragraphs, also each chosen paragraph's first sentence (in HotpotQA often a "
                                "supporting fact)")

    def __post_init__(self):
        at_least(self, 1, "top_k", "paragraphs")
        if self.top_k is not None and self.paragraphs is not None:
            raise ConfigError("top_k and paragraphs are two rules: set one")
        if self.first and self.paragraphs is None:
            raise ConfigError("first adds each chosen paragraph's first sentence: it needs paragraphs")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ConfigError(f"threshold is a score in [0, 1], got {self.threshold}")

    @property
    def given(self) -> bool:
        """Does this rule say anything (`first` only refines `paragraphs`)?"""
        return any(value is not None for value in (self.top_k, self.threshold, self.paragraphs))

    def or_saved(self, saved: SpRule | None) -> SpRule:
        """This rule where it says something, else the reader's saved one, else top-2."""
        return self if self.given else saved or SpRule(top_k=DEFAULT_TOP_K)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
