"""A trained sentence scorer for supporting facts, over the context states the selector reads.

Each sentence is the mean of its tokens' context states; its paragraph is the mean of its sentences. With a
question vector (the question-aware modes), each sentence also sees its and its paragraph's elementwise product
with the question, as unit vectors. A small transformer over all sentences of the context then lets a sentence
weigh the others (HotpotQA's bridge questions: the second paragraph is named in the first) before one logit each,
added to the question's cosines with the sentence and its paragraph (learned weights, starting from 10 and 5).
With lexical evidence (`sp_lexical`), each sentence's five features from `data.lexical` (which question words it
and its paragraph hold, title matches, the bridge links between paragraphs) join its input and, like the cosines,
its logit through learned weights that start where the untrained features already rank well (docs/real.md).
Supervised by binary cross-entropy against the supporting sentences.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .heads import LEXICAL_PRIOR, Evidence, EvidenceHead, Loss
from .pooling import group_max, group_mean

MAX_POSITION = 8  # a sentence's position inside its paragraph, clamped: the first few matter most


class SentenceScorer(EvidenceHead):
    name = "sentence scorer"

    def __init__(self, *, dim: int, heads: int, layers: int = 2, question_aware: bool, lexical: bool = False,
                 loss_weight: float = 1.0, paragraph_loss_weight: float = 0.0):
        super().__init__()
        if lexical and not question_aware:
            raise ValueError("lexical evidence compares the sentences with the question: a question-blind scorer "
                             "cannot take it")
        self.question_aware = question_aware
        self.reads_lexical = lexical
        self.loss_weight, self.paragraph_loss_weight = loss_weight, paragraph_loss_weight
        parts = 4 if question_aware else 2  # sentence, paragraph (× question for each)
        # one norm per part: the products are ~1/dim in size beside the states and would vanish in a shared one
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(parts))
        extra = (2 if question_aware else 0) + (len(LEXICAL_PRIOR) if lexical else 0)  # the cosines, lexical features
        self.embed = nn.Linear(parts * dim + extra, dim)
        self.position = nn.Embedding(MAX_POSITION, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.1, batch_first=True,
                                           norm_first=True)
        self.mixer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))
        # The untrained cosines already rank sentences well (docs/real.md): they enter the logit directly, so training
        # starts from that ranking and learns what to add to it.
        self.prior = nn.Parameter(torch.tensor([10.0, 5.0])) if question_aware else None
        self.lexical_prior = nn.Parameter(torch.tensor(LEXICAL_PRIOR)) if lexical else None

    def forward(self, context: torch.Tensor, batch: dict, question: torch.Tensor | None) -> torch.Tensor:
        """context (B, L, H) states; question (B, H) or None → one logit per sentence (B, S)."""
        sentence_mask = batch["sentence_mask"]  # (B, S)
        sentences = group_mean(context, batch["sentence_index"], batch["context_mask"], sentence_mask.shape[1])  # (B, S, H)
        paragraph_of = batch["sentence_paragraph"]  # (B, S)
        paragraphs = group_mean(sentences, paragraph_of, sentence_mask, int(paragraph_of.max()) + 1)  # (B, P, H)
        paragraphs = paragraphs.gather(1, paragraph_of[..., None].expand_as(sentences))  # (B, S, H)
        parts = [sentences, paragraphs]
        cosines = []
        if self.question_aware:
            if question is None:
                raise ValueError("a question-aware scorer needs the question vector")
            # unit vectors: the sum of each product is the cosine, the untrained retrieval score of MiniLM-style encoders
            asked = F.normalize(question, dim=-1)[:, None]  # (B, 1, H)
            products = [F.normalize(sentences, dim=-1) * asked, F.normalize(paragraphs, dim=-1) * asked]
            parts += products
            cosines = [torch.stack([p.sum(dim=-1) for p in products], dim=-1)]  # (B, S, 2)
        evidence = [batch["sentence_lexical"].to(context.dtype)] if self.lexical_prior is not None else []  # (B, S, 5)
        x = self.embed(torch.cat([norm(part) for norm, part in zip(self.norms, parts)] + cosines + evidence, dim=-1))
        x = x + self.position(batch["sentence_position"].clamp_max(MAX_POSITION - 1))
        x = self.mixer(x, src_key_padding_mask=~sentence_mask)
        logits = self.out(x).squeeze(-1).float()  # (B, S)
        # each cosine and feature relative to the example's best, so the best sentence in each starts at 0
        for values, weights in ((cosines, self.prior), (evidence, self.lexical_prior)):
            if values:
                best = values[0].masked_fill(~sentence_mask[..., None], -1.0).amax(dim=1, keepdim=True)  # (B, 1, F)
                logits = logits + ((values[0] - best).float() * weights).sum(dim=-1)
        return logits.masked_fill(~sentence_mask, -1e4)  # (B, S)

    def losses(self, evidence: Evidence, batch: dict) -> list[Loss]:
        logits = self(evidence.context, batch, evidence.question)
        support, mask = batch["sentence_support"], batch["sentence_mask"]
        losses = [("sp_scorer_loss", self.loss_weight, sentence_bce(logits, support, mask))]
        if self.paragraph_loss_weight > 0:
            losses.append(("sp_paragraph_loss", self.paragraph_loss_weight,
                           paragraph_bce(logits, support, mask, batch["sentence_paragraph"])))
        return losses

    def scores(self, evidence: Evidence, batch: dict) -> torch.Tensor:
        """Each sentence's probability of being a supporting fact; 0 past an example's sentences."""
        return torch.sigmoid(self(evidence.context, batch, evidence.question)) * batch["sentence_mask"]


def paragraph_bce(logits: torch.Tensor, support: torch.Tensor, mask: torch.Tensor,
                  sentence_paragraph: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each paragraph's best sentence logit against "holds a supporting fact": the
    quantity the paragraph rule ranks by (`evaluation.facts`). logits, support, mask, sentence_paragraph (B, S)
    → (B,), NaN for an example without supporting sentences."""
    groups = int(sentence_paragraph.max()) + 1
    best, present = group_max(logits.float(), sentence_paragraph, mask, groups, empty=-1e4)  # (B, P)
    gold, _ = group_max((support & mask).float(), sentence_paragraph, mask, groups, empty=0.0)
    return sentence_bce(best, gold.bool(), present)


def sentence_bce(logits: torch.Tensor, support: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of each example's sentences against its supporting ones: logits, support, mask (B, S)
    → (B,), NaN for an example without supporting sentences (nothing to learn from)."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), support.float(), reduction="none") * mask
    per_example = loss.sum(dim=1) / mask.sum(dim=1).clamp_min(1)
    return torch.where((support & mask).any(dim=1), per_example, torch.nan)
