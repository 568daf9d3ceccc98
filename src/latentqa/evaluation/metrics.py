"""HotpotQA's official metrics, written from their definition.

Answer: SQuAD normalisation (lower case, no punctuation, no articles, single spaces); exact match on normalised
strings; token F1 — except that when either side normalises to `yes`, `no` or `noanswer` and the two differ,
F1, precision and recall are 0. Supporting facts: sets of (title, sent_id) (duplicates count once); EM is 1 when
the sets are equal. Joint: precision and recall are products of the answer and supporting-fact ones, EM the
product of the EMs. Averages run over *all* gold examples: a missing prediction scores 0 and is counted.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass

ANSWER_KEYS = ("em", "f1", "prec", "recall")
SP_KEYS = ("sp_em", "sp_f1", "sp_prec", "sp_recall")
JOINT_KEYS = ("joint_em", "joint_f1", "joint_prec", "joint_recall")
CLOSED_ANSWERS = ("yes", "no", "noanswer")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def answer_scores(prediction: str, gold: str) -> tuple[float, float, float, float]:
    """(em, f1, precision, recall) of one answer."""
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    em = float(pred == ref)
    if pred != ref and (pred in CLOSED_ANSWERS or ref in CLOSED_ANSWERS):
        return em, 0.0, 0.0, 0.0
    common = sum((Counter(pred.split()) & Counter(ref.split())).values())
    if common == 0:
        return em, 0.0, 0.0, 0.0
    precision, recall = common / len(pred.split()), common / len(ref.split())
    return em, _f1(precision, recall), precision, recall


def sp_scores(prediction, gold) -> tuple[float, float, float, float]:
    """(em, f1, precision, recall) of one set of supporting facts; both are iterables of (title, sent_id)."""
    pred, ref = {tuple(f) for f in prediction}, {tuple(f) for f in gold}
    tp, fp, fn = len(pred & ref), len(pred - ref), len(ref - pred)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return float(fp + fn == 0), _f1(precision, recall), precision, recall


@dataclass
class ExampleScore:
    id: str
    answer: tuple[float, float, float, float] | None  # None: no prediction for this id
    sp: tuple[float, float, float, float] | None

    @property
    def joint(self) -> tuple[float, float, float, float] | None:
        if self.answer is None or self.sp is None:
            return None
        precision, recall = self.answer[2] * self.sp[2], self.answer[3] * self.sp[3]
        return self.answer[0] * self.sp[0], _f1(precision, recall), precision, recall


def score_examples(gold: list, answers: dict[str, str], sp: dict[str, list] | None) -> list[ExampleScore]:
    """Per-example scores; `gold` are Examples (labelled), `sp` None when the predictions have no supporting facts."""
    return [ExampleScore(
        id=ex.id,
        answer=answer_scores(answers[ex.id], ex.answer or "") if ex.id in answers else None,
        sp=sp_scores(sp[ex.id], ex.supporting_facts) if sp is not None and ex.id in sp else None,
    ) for ex in gold]


def average(scores: list[ExampleScore], with_sp: bool = True) -> dict:
    """Official averages over all examples (missing = 0); sp and joint metrics are None when `with_sp` is False."""
    n = max(len(scores), 1)
    metrics: dict = {}
    parts = [(ANSWER_KEYS, lambda s: s.answer)]
    parts += [(SP_KEYS, lambda s: s.sp), (JOINT_KEYS, lambda s: s.joint)] if with_sp else []
    for keys, get in parts:
        for i, key in enumerate(keys):
            metrics[key] = sum(get(s)[i] for s in scores if get(s) is not None) / n
    if not with_sp:
        metrics.update({key: None for key in SP_KEYS + JOINT_KEYS})
    metrics["count"] = len(scores)
    metrics["missing_answer"] = sum(s.answer is None for s in scores)
    metrics["missing_sp"] = sum(s.sp is None for s in scores) if with_sp else None
    return metrics


def score(gold: list, answers: dict[str, str], sp: dict[str, list] | None = None) -> dict:
    """Official HotpotQA metrics of a prediction set against labelled examples."""
    return average(score_examples(gold, answers, sp), with_sp=sp is not None)
