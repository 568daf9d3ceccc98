"""The rule that turns per-sentence scores into supporting facts: top-k, or a threshold (the best sentence always).

A reader with sentence scores gets its rule chosen on validation data by the trainer (`choose_sp_rule`) and saved
in its folder; `predict`, `eval` and serving use that rule unless `eval.sp_top_k` / `eval.sp_threshold` (or their
command-line flags) say otherwise.
"""
from __future__ import annotations

import dataclasses

from ..config import EvalConfig
from ..data.examples import Example
from .metrics import sp_scores

TOP_KS = (1, 2, 3, 4)  # HotpotQA questions have 2 to 4 supporting facts
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
DEFAULT_TOP_K = 2


def select_facts(example: Example, scores: list[float], config: EvalConfig) -> list[list]:
    """Supporting facts from per-sentence scores, by the rule of `config` (resolved with `effective_rule`)."""
    keys = example.sentence_keys()
    if not keys:
        return []
    order = sorted(range(len(keys)), key=lambda i: -scores[i])
    if config.sp_threshold is None:
        chosen = order[:config.sp_top_k or DEFAULT_TOP_K]
    else:
        chosen = [i for i in order if scores[i] >= config.sp_threshold] or order[:1]
    return [[keys[i][0], keys[i][1]] for i in sorted(chosen)]


def effective_rule(config: EvalConfig, saved: dict | None) -> EvalConfig:
    """`config` with the reader's saved rule where it sets neither top-k nor a threshold itself."""
    if config.sp_top_k is None and config.sp_threshold is None:
        saved = saved or {"sp_top_k": DEFAULT_TOP_K, "sp_threshold": None}
        return dataclasses.replace(config, sp_top_k=saved["sp_top_k"], sp_threshold=saved["sp_threshold"])
    return config


def rule_sp_f1(examples: list[Example], scores: dict[str, list[float]], rule: EvalConfig) -> float:
    """Mean supporting-fact F1 of `rule` over the examples that have scores."""
    scored = [ex for ex in examples if ex.id in scores]
    f1s = [sp_scores(select_facts(ex, scores[ex.id], rule), ex.supporting_facts)[1] for ex in scored]
    return sum(f1s) / max(len(f1s), 1)


def choose_sp_rule(examples: list[Example], scores: dict[str, list[float]]) -> dict:
    """The top-k or threshold rule with the best mean sp F1 on `examples` (labelled) and their sentence scores:
    {"sp_top_k", "sp_threshold", "sp_f1"}; ties go to the earlier rule (top-k before thresholds)."""
    rules = [EvalConfig(sp_top_k=k) for k in TOP_KS] + [EvalConfig(sp_threshold=t) for t in THRESHOLDS]
    best, best_f1 = rules[0], -1.0
    for rule in rules:
        f1 = rule_sp_f1(examples, scores, rule)
        if f1 > best_f1:
            best, best_f1 = rule, f1
    return {"sp_top_k": best.sp_top_k, "sp_threshold": best.sp_threshold, "sp_f1": best_f1}
