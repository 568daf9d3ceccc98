"""Choosing a reader's supporting-fact rule (`config.SpRule`) on labelled data: every top-k, threshold and
paragraph rule of a small grid, scored by mean sp F1; the trainer runs it on validation after each evaluation and
saves the winner with the reader."""
from __future__ import annotations

from ..data.examples import Example
from ..config import SpRule
from .facts import select_facts
from .metrics import sp_scores

TOP_KS = (1, 2, 3, 4)  # HotpotQA questions have 2 to 4 supporting facts
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
PARAGRAPHS = 2  # HotpotQA's gold paragraphs per question
RULES = (*(SpRule(top_k=k) for k in TOP_KS), *(SpRule(threshold=t) for t in THRESHOLDS),
         *(SpRule(paragraphs=PARAGRAPHS, first=first, threshold=t) for first in (False, True) for t in (None, *THRESHOLDS)))


def rule_sp_f1(examples: list[Example], scores: dict[str, list[float]], rule: SpRule,
               paragraph_scores: dict[str, list[float]] | None = None) -> float:
    """Mean supporting-fact F1 of `rule` over the examples that have scores."""
    paragraph_scores = paragraph_scores or {}
    f1s = [sp_scores(select_facts(ex, scores[ex.id], rule, paragraph_scores.get(ex.id)), ex.supporting_facts)[1]
           for ex in examples if ex.id in scores]
    return sum(f1s) / max(len(f1s), 1)


def choose_sp_rule(examples: list[Example], scores: dict[str, list[float]],
                   paragraph_scores: dict[str, list[float]] | None = None) -> tuple[SpRule, float]:
    """The rule of `RULES` with the best mean sp F1 on `examples` (labelled) and their sentence scores, and that
    F1; ties go to the earlier rule (top-k, then thresholds, then paragraphs)."""
    best, best_f1 = RULES[0], -1.0
    for rule in RULES:
        f1 = rule_sp_f1(examples, scores, rule, paragraph_scores)
        if f1 > best_f1:
            best, best_f1 = rule, f1
    return best, best_f1
