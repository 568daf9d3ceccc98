"""Paragraph-level figures of sentence scores, and the floors that need no training (`latentqa cosine-sp`): a
pretrained encoder's question-sentence cosine, and the lexical evidence (`data.lexical`) weighed as the sentence
scorer starts.

Gold-paragraph recall: the share of a question's gold paragraphs (those holding a supporting fact; 2 in HotpotQA)
among its top 2 paragraphs, a paragraph scored by its best sentence.
"""
from __future__ import annotations

import torch

from ..data.examples import Example
from ..data.features import FeatureSpec, encode_examples, format_sentence
from ..config import SpRule
from .facts import best_sentence_per_paragraph, select_facts
from ..readers.pooling import masked_mean
from ..readers.heads import lexical_score
from ..progress import progress_bar
from .metrics import score
from .sp_rule import PARAGRAPHS


def paragraph_recall(examples: list[Example], scores: dict[str, list[float]], top: int = 2) -> float:
    """Mean share of the gold paragraphs among the `top` best-scored paragraphs (examples with gold facts only)."""
    shares = []
    for ex in examples:
        gold = {title for title, _ in ex.supporting_facts}
        if not gold or ex.id not in scores:
            continue
        ranked = list(best_sentence_per_paragraph(ex.sentence_keys(), scores[ex.id]))[:top]
        shares.append(len(gold & set(ranked)) / len(gold))
    return sum(shares) / max(len(shares), 1)


def lexical_scores(examples: list[Example], tokenizer) -> dict[str, list[float]]:
    """Per example, each sentence's lexical features weighed by the sentence scorer's starting weights."""
    features = encode_examples(examples, FeatureSpec(lexical=True), question_tokenizer=tokenizer,
                               context_tokenizer=tokenizer, progress=False)["sentence_lexical"]
    return {ex.id: lexical_score(torch.tensor(rows).reshape(len(ex.sentence_keys()), -1)).tolist()
            for ex, rows in zip(examples, features)}


@torch.no_grad()
def cosine_scores(examples: list[Example], encoder, tokenizer, batch_size: int = 64,
                  progress: bool = True) -> dict[str, list[float]]:
    """Per example, the cosine of each `"{title}: {sentence}"` with the question, both embedded alone as the mean
    of the encoder's token states (how all-MiniLM-L6-v2 embeds text)."""
    def embed(texts: list[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, return_tensors="pt")
            states = encoder(**batch).last_hidden_state  # (b, T, H)
            out.append(torch.nn.functional.normalize(masked_mean(states, batch["attention_mask"]), dim=-1))
        return torch.cat(out) if out else torch.zeros(0)

    encoder.eval()
    scores = {}
    for ex in progress_bar(examples, desc="cosine", unit="question", disable=not progress):
        sentences = [format_sentence(p.title, s) for p in ex.paragraphs for s in p.sentences]
        if not sentences:
            scores[ex.id] = []
            continue
        vectors = embed([ex.question.strip(), *sentences])
        scores[ex.id] = (vectors[1:] @ vectors[0]).tolist()
    return scores


UNTRAINED_RULES = {"top2": SpRule(top_k=2), "first-and-best": SpRule(paragraphs=PARAGRAPHS, first=True),
                   "paragraphs": SpRule(paragraphs=PARAGRAPHS)}


def untrained_sp(examples: list[Example], encoder, tokenizer) -> list[dict]:
    """The floors no training reaches under: supporting facts from MiniLM-style cosines and from the lexical
    evidence, under each rule of `UNTRAINED_RULES`. One row each: scores, rule, metrics, the facts per example."""
    answers = {ex.id: "" for ex in examples}
    rows = []
    for kind, scores in (("cosine", cosine_scores(examples, encoder, tokenizer)),
                         ("lexical", lexical_scores(examples, tokenizer))):
        recall = paragraph_recall(examples, scores)
        for name, rule in UNTRAINED_RULES.items():
            sp = {ex.id: select_facts(ex, scores[ex.id], rule) for ex in examples}
            rows.append({"scores": kind, "rule": name, "metrics": score(examples, answers, sp), "recall": recall,
                         "sp": sp})
    return rows
