"""What passes the bottleneck, side by side (`latentqa eval --evidence`): supporting facts from each evidence head
of a latent reader alone, under the same fixed rules, and how much of the latents' attention lies on the
supporting sentences.

Heads (`readers.heads`): the reader's own (the selector's attention, the original design's signal; the sentence
scorer over the context states; the paragraph-pair ranker, its paragraphs with the sentence head's sentences inside
them) and, where the reader reads lexical evidence, that evidence weighed by `heads.LEXICAL_PRIOR`. The rules are fixed, not chosen on
the data scored: the 2 best sentences, and the first and best sentence of the 2 best paragraphs.
"""
from __future__ import annotations

import torch

from ..data.examples import Example
from ..progress import progress_bar
from ..config import SpRule
from .facts import select_facts
from ..readers.heads import LexicalHead
from ..readers.heads import attention_mass_nll
from .metrics import score
from .sp_rule import PARAGRAPHS

RULES = {"top2": SpRule(top_k=2), "first-and-best": SpRule(paragraphs=PARAGRAPHS, first=True)}


@torch.no_grad()
def head_scores(reader, loader, examples: list[Example]) -> tuple[dict[str, dict[str, list[float]]], list[float]]:
    """Per head, per example id, one score per sentence; and per example the selector's attention mass on its
    supporting sentences (averaged over latents). `loader` yields the reader's batches of `examples`, in order."""
    reader.eval()
    heads: dict[str, dict[str, list[float]]] = {}
    support_mass = []
    for batch in progress_bar(loader, desc="evidence", unit="batch"):
        evidence = reader.read(batch).evidence
        per_head = {head.name: head.scores(evidence, batch)
                    for head in [*reader.heads, *([LexicalHead()] if "sentence_lexical" in batch else [])]}
        mass = torch.exp(-attention_mass_nll(evidence.attention, batch["support"] & batch["context_mask"]))  # (B,)
        for row, i in enumerate(batch["index"].tolist()):
            example = examples[i]
            n = len(example.sentence_keys())
            for name, values in per_head.items():
                heads.setdefault(name, {})[example.id] = values[row, :n].tolist()
            if not mass[row].isnan():  # an example with supporting tokens
                support_mass.append(float(mass[row]))
    return heads, support_mass


def evidence_table(reader, loader, examples: list[Example]) -> dict:
    """{head: {rule: {"sp_em", "sp_f1"}}} and the mean attention mass on supporting sentences."""
    heads, support_mass = head_scores(reader, loader, examples)
    answers = {ex.id: "" for ex in examples}
    table = {}
    paragraph_head = reader.paragraph_head
    for name, scores in heads.items():
        ranker = paragraph_head is not None and name == paragraph_head.name
        sentence = heads[reader.sentence_head.name] if ranker else scores
        if ranker:
            name = f"{name} + {reader.sentence_head.name}"
        table[name] = {}
        for rule_name, rule in RULES.items():
            if ranker and rule.paragraphs is None:
                continue  # the ranker orders paragraphs: only the paragraph rule reads it
            sp = {ex.id: select_facts(ex, sentence[ex.id], rule, scores[ex.id] if ranker else None) for ex in examples}
            metrics = score(examples, answers, sp)
            table[name][rule_name] = {"sp_em": metrics["sp_em"], "sp_f1": metrics["sp_f1"]}
    return {"heads": table, "attention_on_support": sum(support_mass) / max(len(support_mass), 1)}


def format_evidence(evidence: dict) -> str:
    lines = [f"{'head':<22} " + "  ".join(f"{rule + ' sp EM/F1':>26}" for rule in RULES)]
    for name, rules in evidence["heads"].items():
        cells = [f"{rules[r]['sp_em']:.3f} / {rules[r]['sp_f1']:.3f}" if r in rules else "-" for r in RULES]
        lines.append(f"{name:<22} " + "  ".join(f"{c:>26}" for c in cells))
    lines.append(f"the latents' attention on supporting sentences: {evidence['attention_on_support']:.3f}")
    return "\n".join(lines)
