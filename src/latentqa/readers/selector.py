"""Perceiver-style latent selector: learned latents cross-attend to every context token.

Each block is pre-norm cross-attention (latents → context) then a pre-norm feed-forward, both residual. The
selector returns the latents and the **last block's** attention over context tokens, averaged over heads; that
attention is what the support (and answer-span) loss trains and what sentence scores are read from.

The latents never attend to each other, so each one is a function of the context (and question) alone: the first k
of N latents are exactly what a selector of k latents with the same weights computes. Nested latents
(`latent.nested_latents`) rest on this: `num_latents=k` runs only the first k.

Question-aware latents (`question_conditioning: latents`): before each context block, the latents cross-attend to
the question's states (a block of the same shape), so what they look for in the context depends on what was asked,
while the context states stay a function of the context alone (cacheable, reusable across questions).

Sentence relevance (`selector_relevance`): each context block's attention logits get, per head, a learned temperature
times the cosine between the question vector and the mean state of the token's sentence, both through one learned
projection (starting as the identity). A pretrained sentence embedder's states already place a question near the
sentence that answers it; learned latents alone did not find that match in the many-facts demo (docs/demo.md), and
with it they do. Computed from the context states, which stay question-free and cacheable.

Lexical attention bias (`selector_lexical`): each context block's attention logits get, per head, a learned
weighting of the token's sentence's lexical evidence (`data.lexical`: which question words the sentence and its
paragraph hold, title matches, links), so the latents can find the sentences that name what was asked without
having to learn that match from the states; added after the context states, which stay cacheable.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from .pooling import group_mean


class CrossAttention(nn.Module):
    def __init__(self, *, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"selector width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, latents: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor,
                key_bias: torch.Tensor | None = None):
        """latents (B, N, D), context (B, L, D), key_mask (B, L) bool, key_bias (B, h, L) added to the attention
        logits or None → out (B, N, D), attention (B, N, L)."""
        b, n, d = latents.shape
        length, h = context.shape[1], self.heads
        q = self.to_q(latents).view(b, n, h, d // h).transpose(1, 2)  # (B, h, N, d/h)
        k, v = self.to_kv(context).view(b, length, 2, h, d // h).permute(2, 0, 3, 1, 4)  # 2 × (B, h, L, d/h)
        scores = (q @ k.transpose(-1, -2)) * (d // h) ** -0.5  # (B, h, N, L)
        if key_bias is not None:
            scores = scores + key_bias[:, :, None, :].to(scores.dtype)
        # A finite fill, not -inf: an example with no context tokens gets uniform attention over padding
        # (and a zero support mass) instead of NaN.
        scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        attention = scores.softmax(dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        return self.to_out(out), attention.mean(dim=1)


class SelectorBlock(nn.Module):
    def __init__(self, *, dim: int, heads: int, ff_mult: int = 4):
        super().__init__()
        self.norm_latents = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attention = CrossAttention(dim=dim, heads=heads)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))

    def forward(self, latents, context, key_mask, key_bias=None):
        update, attention = self.attention(self.norm_latents(latents), self.norm_context(context), key_mask, key_bias)
        latents = latents + update
        return latents + self.ff(self.norm_ff(latents)), attention


class LatentSelector(nn.Module):
    def __init__(self, *, dim: int, num_latents: int = 32, depth: int = 2, heads: int = 8,
                 question_aware: bool = False):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * 0.02)
        self.blocks = nn.ModuleList(SelectorBlock(dim=dim, heads=heads) for _ in range(depth))
        self.question_blocks = nn.ModuleList(SelectorBlock(dim=dim, heads=heads) for _ in range(depth)) \
            if question_aware else None
        self.norm = nn.LayerNorm(dim)
        self.gradient_checkpointing = False

    def forward(self, context: torch.Tensor, key_mask: torch.Tensor, question: torch.Tensor | None = None,
                question_mask: torch.Tensor | None = None, context_bias: torch.Tensor | None = None,
                num_latents: int | None = None):
        """context (B, L, D), key_mask (B, L) bool; question (B, Tq, D) and its mask for a question-aware selector;
        context_bias (B, heads, L) added to every context block's attention logits or None; num_latents: run only
        the first N of the latents (None: all)
        → latents (B, N, D), last block's attention over the context (B, N, L)."""
        if (question is None) != (self.question_blocks is None):
            raise ValueError("a question-aware selector needs the question, and only it takes one")
        latents = self.latents[:num_latents].unsqueeze(0).expand(context.shape[0], -1, -1)  # (B, N, D)
        for i, block in enumerate(self.blocks):
            if question is not None:
                latents, _ = self._run(self.question_blocks[i], latents, question, question_mask)
            latents, attention = self._run(block, latents, context, key_mask, context_bias)
        return self.norm(latents), attention

    def _run(self, block, latents, keys, key_mask, key_bias=None):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, latents, keys, key_mask, key_bias, use_reentrant=False)
        return block(latents, keys, key_mask, key_bias)


class SentenceRelevance(nn.Module):
    # A cosine gap of 0.1 between the asked sentence and the others is then 2 logits; on the demo's training
    # questions (K = 4), untrained, this alone puts 0.54 of the attention on the asked fact (docs/demo.md).
    INITIAL_TEMPERATURE = 20.0

    def __init__(self, *, dim: int, heads: int):
        super().__init__()
        self.project = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(self.project.weight)
        self.log_temperature = nn.Parameter(torch.full((heads,), math.log(self.INITIAL_TEMPERATURE)))

    def forward(self, context: torch.Tensor, context_mask: torch.Tensor, sentence_index: torch.Tensor,
                num_sentences: int, question: torch.Tensor) -> torch.Tensor:
        """context (B, L, H), context_mask and sentence_index (B, L), the batch's padded sentence count (a shape,
        so no device sync), question vector (B, H) → attention logit bias (B, heads, L): per head, temperature ×
        cos(question, the token's sentence)."""
        sentences = group_mean(context, sentence_index, context_mask, num_sentences)  # (B, S, H)
        sentences = F.normalize(self.project(sentences), dim=-1)
        question = F.normalize(self.project(question), dim=-1)
        cosine = (sentences @ question[..., None]).squeeze(-1).gather(1, sentence_index)  # (B, L)
        return self.log_temperature.exp()[None, :, None] * cosine[:, None, :]
