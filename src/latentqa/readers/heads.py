"""Evidence heads: the parts of a latent reader that score sentences as supporting facts, behind one interface.

A head says which batch features it reads (`reads_lexical`: the lexical evidence of `data.lexical`, built only
when some part asks), whether it is fitted on the training questions before the first step (`needs_fit`, `fit`),
what it adds to the training loss (`losses`) and how it scores the sentences (`scores`, higher: more likely a
supporting fact). A head that `ranks_paragraphs` gives each sentence its paragraph's score: the paragraph rule
(`evaluation.facts`) orders paragraphs by it and takes the sentences from another head.

Heads here: the selector's attention (always there: the original design's evidence signal) and the lexical
evidence alone (no parameters; `latentqa eval --evidence`, `cosine-sp`). The sentence scorer is in `scorer.py`, the
paragraph-pair ranker in `pairs.py`. The attention head's loss and scores (`attention_mass_nll`,
`sentence_scores`) and the mean a reader takes of each head's per-example losses are here too.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


# Weights of the lexical features (`data.lexical.FEATURES` order): × 4 the weighting that ranks the 1,315 shared
# training questions' sentences best untrained, chosen among 243 (each weight 0.5, 1 or 2; first + best sentence of
# the 2 best paragraphs: sp F1 0.612 on them; docs/real.md). Validation chose nothing here. The sentence scorer and
# the selector's lexical bias start from them.
LEXICAL_PRIOR = (8.0, 4.0, 4.0, 8.0, 2.0)

Loss = tuple[str, float, torch.Tensor]  # name, weight, per example (B,): NaN where an example has nothing to score


def attention_mass_nll(attention: torch.Tensor, marked: torch.Tensor) -> torch.Tensor:
    """-log(attention mass on the marked tokens) per example: attention (B, L) over context tokens (averaged over
    latents), marked (B, L) bool → (B,), NaN for an example without marked tokens. Computed in float32 so bf16 mass
    near 0 stays finite."""
    mass = (attention.float() * marked).sum(dim=-1)  # (B,)
    return torch.where(marked.any(dim=-1), -torch.log(mass.clamp_min(1e-12)), torch.nan)


def mean_over_scored(per_example: torch.Tensor) -> torch.Tensor:
    """Mean of the non-NaN entries of (B,); 0 when there are none."""
    scored = ~per_example.isnan()
    if not bool(scored.any()):
        return per_example.new_zeros(())
    return per_example[scored].mean()


def sentence_scores(token_attention: torch.Tensor, sentence_index: torch.Tensor, context_mask: torch.Tensor,
                    num_sentences: int) -> torch.Tensor:
    """Attention mass summed per sentence: token_attention (B, L), sentence_index (B, L) → (B, num_sentences)."""
    weights = token_attention.float() * context_mask
    scores = weights.new_zeros(token_attention.shape[0], max(num_sentences, 1))
    return scores.scatter_add_(1, sentence_index, weights)


@dataclass
class Evidence:
    """What one reading of a batch offers the heads."""

    context: torch.Tensor  # (B, L, H) the context states the selector read
    question: torch.Tensor | None  # (B, H) the question vector (question-aware modes), else None
    attention: torch.Tensor  # (B, L) the selector's last block over context tokens, averaged over the latents read


def lexical_score(features: torch.Tensor) -> torch.Tensor:
    """Lexical features (..., F) weighed by `LEXICAL_PRIOR` → (...)."""
    return features.float() @ torch.tensor(LEXICAL_PRIOR, device=features.device)


class EvidenceHead(nn.Module):
    name: str
    reads_lexical = False
    ranks_paragraphs = False

    @property
    def needs_fit(self) -> bool:
        return False

    def fit(self, batches) -> dict[str, float]:
        """Fit on labelled collated batches before training; returns the fit's figures."""
        return {}

    def losses(self, evidence: Evidence, batch: dict) -> list[Loss]:
        return []

    def scores(self, evidence: Evidence, batch: dict) -> torch.Tensor:
        """One score per sentence (B, S)."""
        raise NotImplementedError


class AttentionHead(EvidenceHead):
    """The selector's attention mass per sentence, averaged over latents; trained through the selector by
    -log(mass on the supporting tokens) and, optionally, on the answer's words inside them."""

    name = "selector attention"

    def __init__(self, support_weight: float, answer_span_weight: float = 0.0):
        super().__init__()
        self.support_weight, self.answer_span_weight = support_weight, answer_span_weight

    def losses(self, evidence: Evidence, batch: dict) -> list[Loss]:
        marked = [("support_loss", self.support_weight, batch["support"])]
        if self.answer_span_weight > 0:
            marked.append(("answer_span_loss", self.answer_span_weight, batch["answer_span"]))
        return [(name, weight, attention_mass_nll(evidence.attention, tokens & batch["context_mask"]))
                for name, weight, tokens in marked]

    def scores(self, evidence: Evidence, batch: dict) -> torch.Tensor:
        return sentence_scores(evidence.attention, batch["sentence_index"], batch["context_mask"],
                               int(batch["num_sentences"].max()))


class LexicalHead(EvidenceHead):
    """Each sentence's lexical evidence weighed by `LEXICAL_PRIOR`: the floor that needs no training."""

    name = "lexical evidence"
    reads_lexical = True

    def scores(self, evidence: Evidence | None, batch: dict) -> torch.Tensor:
        return lexical_score(batch["sentence_lexical"])
