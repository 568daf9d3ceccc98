"""The rule that turns per-sentence scores into supporting facts: top-k; a threshold (the best sentence always); or
the best sentence of each of the best N paragraphs, with their first sentences if `sp_first` and their other
sentences over a threshold if one is set (HotpotQA's facts come from exactly 2 paragraphs, at least one from each,
very often the first). With a paragraph-pair ranker (`readers.pairs`), the paragraph rule takes the paragraphs its
scores rank first instead of those holding the best sentences.

A reader with sentence scores gets its rule chosen on validation data by the trainer (`choose_sp_rule`) and saved
in its folder; `predict`, `eval` and serving use that rule unless `eval.sp_top_k` / `eval.sp_threshold` /
`eval.sp_paragraphs` (or their command-line flags) say otherwise.
"""
from __future__ import annotations

import dataclasses

from ..config import EvalConfig
from ..data.examples import Example
from .metrics import sp_scores

TOP_KS = (1, 2, 3, 4)  # HotpotQA questions have 2 to 4 supporting facts
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
PARAGRAPHS = 2  # HotpotQA's gold paragraphs per question
DEFAULT_TOP_K = 2
RULE_FIELDS = ("sp_top_k", "sp_threshold", "sp_paragraphs", "sp_first")


def rule_of(config: EvalConfig) -> dict:
    """The supporting-fact rule of `config`, as saved with a reader."""
    return {name: getattr(config, name) for name in RULE_FIELDS}


def rule_given(config: EvalConfig) -> bool:
    """Does `config` set a rule itself (sp_first only refines sp_paragraphs)?"""
    return any(getattr(config, name) is not None for name in ("sp_top_k", "sp_threshold", "sp_paragraphs"))


def select_facts(example: Example, scores: list[float], config: EvalConfig,
                 paragraph_scores: list[float] | None = None) -> list[list]:
    """Supporting facts from per-sentence scores, by the rule of `config` (resolved with `effective_rule`);
    `paragraph_scores` (per sentence, its paragraph's) order the paragraphs for the paragraph rule where given."""
    keys = example.sentence_keys()
    if not keys:
        return []
    order = sorted(range(len(keys)), key=lambda i: -scores[i])
    if config.sp_paragraphs is not None:
        best: dict[str, int] = {}  # each title's best sentence: the first in `order`
        for i in order:
            best.setdefault(keys[i][0], i)
        titles = list(best)
        if paragraph_scores is not None:  # stable: equal paragraph scores keep the best-sentence order
            titles.sort(key=lambda t: -paragraph_scores[best[t]])
        titles = titles[:config.sp_paragraphs]
        chosen = {best[t] for t in titles}
        if config.sp_first:
            chosen |= {keys.index((t, min(i for title, i in keys if title == t))) for t in titles}
        if config.sp_threshold is not None:
            chosen |= {i for i in order if keys[i][0] in titles and scores[i] >= config.sp_threshold}
    elif config.sp_threshold is None:
        chosen = order[:config.sp_top_k or DEFAULT_TOP_K]
    else:
        chosen = [i for i in order if scores[i] >= config.sp_threshold] or order[:1]
    return [[keys[i][0], keys[i][1]] for i in sorted(chosen)]


def effective_rule(config: EvalConfig, saved: dict | None) -> EvalConfig:
    """`config` with the reader's saved rule where it sets no rule field (top-k, threshold, paragraphs) itself."""
    if not rule_given(config):
        saved = saved or {"sp_top_k": DEFAULT_TOP_K}
        return dataclasses.replace(config, **{name: saved.get(name) for name in RULE_FIELDS[:3]},
                                   sp_first=bool(saved.get("sp_first")))
    return config


def rule_sp_f1(examples: list[Example], scores: dict[str, list[float]], rule: EvalConfig,
               paragraph_scores: dict[str, list[float]] | None = None) -> float:
    """Mean supporting-fact F1 of `rule` over the examples that have scores."""
    scored = [ex for ex in examples if ex.id in scores]
    paragraph_scores = paragraph_scores or {}
    f1s = [sp_scores(select_facts(ex, scores[ex.id], rule, paragraph_scores.get(ex.id)), ex.supporting_facts)[1]
           for ex in scored]
    return sum(f1s) / max(len(f1s), 1)


def choose_sp_rule(examples: list[Example], scores: dict[str, list[float]],
                   paragraph_scores: dict[str, list[float]] | None = None) -> dict:
    """The top-k, threshold or paragraph rule with the best mean sp F1 on `examples` (labelled) and their sentence
    scores: {"sp_top_k", "sp_threshold", "sp_paragraphs", "sp_first", "sp_f1"}; ties go to the earlier rule (top-k, then
    thresholds, then paragraphs)."""
    rules = [EvalConfig(sp_top_k=k) for k in TOP_KS] + [EvalConfig(sp_threshold=t) for t in THRESHOLDS] + \
        [EvalConfig(sp_paragraphs=PARAGRAPHS, sp_first=first, sp_threshold=t)
         for first in (False, True) for t in (None, *THRESHOLDS)]
    best, best_f1 = rules[0], -1.0
    for rule in rules:
        f1 = rule_sp_f1(examples, scores, rule, paragraph_scores)
        if f1 > best_f1:
            best, best_f1 = rule, f1
    return {**rule_of(best), "sp_f1": best_f1}
