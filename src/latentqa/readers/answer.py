"""The extractive answer head: the answer's type (span / yes / no) and a span of the context's own tokens.

Where the question meets the context is LUMEN's split (de Jong et al., 2023): the context encoder's lower layers run
once per window, question-free, and their states are cached or indexed with the top layer's; the head's own copies
of the encoder's top layers (trained) run live over each paragraph it reads:

    [CLS] question [SEP] ─ encoder layers 1..k ───────────┐
    the paragraph's tokens ─ stored states at layer k ─────┼─ live top layers ─ start / end per token
    the gated latents ─ memory projection ────────────────┘                    └ type, from the question's [CLS]

It reads the `answer_paragraphs` paragraphs the evidence heads rank first (in training, the supporting paragraphs
first), all of them at once: start and end are normalised over every token read (shared normalisation, Clark and
Gardner 2018). The latents join every paragraph as memory, so what passed the bottleneck (the other hop's facts)
is there to attend to; `mask_latents` takes them away to measure what they add.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ConfigError
from ..data.features import ANSWER_TYPES

NEG = -1e4  # a logit no read token can lose to; finite, so softmax and bf16 stay defined


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-family encoder (BERT, MiniLM, RoBERTa, ELECTRA) or DistilBERT: each takes
    (hidden states, additive attention mask) and returns the next states."""
    for path in ("encoder.layer", "transformer.layer"):
        module = encoder
        for name in path.split("."):
            module = getattr(module, name, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ConfigError(f"answer_head 'extract' runs the encoder's top layers live; {type(encoder).__name__} is not a "
                      "BERT-family or DistilBERT encoder whose layers it knows")


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, T) bool → (N, 1, 1, T): 0 where read, the dtype's minimum where not (what the layers add to scores)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        ~mask, torch.finfo(dtype).min)[:, None, None, :]


@dataclass
class AnswerLogits:
    start: torch.Tensor  # (B, L) per context token; NEG where the head did not read it
    end: torch.Tensor  # (B, L)
    kind: torch.Tensor  # (B, len(ANSWER_TYPES))


class ExtractiveAnswerHead(nn.Module):
    def __init__(self, encoder: nn.Module, live_layers: int, paragraphs: int, max_span: int):
        super().__init__()
        layers = encoder_layers(encoder)
        if not 1 <= live_layers <= len(layers):
            raise ConfigError(f"answer_layers must be between 1 and the encoder's {len(layers)} layers, "
                              f"got {live_layers}")
        self.split = len(layers) - live_layers  # the hidden-states index the live layers start from
        self.layers = copy.deepcopy(layers[self.split:])
        self.layers.requires_grad_(True)  # a copy of a frozen encoder's layers still trains
        width = encoder.config.hidden_size
        self.memory = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width))
        self.span = nn.Linear(width, 2)
        self.kind = nn.Linear(width, len(ANSWER_TYPES))
        self.paragraphs, self.max_span = paragraphs, max_span

    def forward(self, lower: torch.Tensor, question: torch.Tensor, question_mask: torch.Tensor,
                latents: torch.Tensor, latent_mask: torch.Tensor, token_paragraph: torch.Tensor,
                context_mask: torch.Tensor, chosen: torch.Tensor) -> AnswerLogits:
        """lower (B, L, H): the context's states at the split layer; question (B, Tq, H) at the same layer, with
        its mask; latents (B, N, H) and latent_mask (B, N); token_paragraph (B, L): each token's paragraph;
        chosen (B, P): the paragraphs to read, -1 for none."""
        batch, length = context_mask.shape
        sequences, masks, places = [], [], []  # one per (example, chosen paragraph)
        for b in range(batch):
            asked = question[b, question_mask[b]]
            memory = self.memory(latents[b])
            for paragraph in chosen[b].tolist():
                if paragraph < 0:
                    continue
                tokens = torch.nonzero((token_paragraph[b] == paragraph) & context_mask[b]).squeeze(1)
                sequences.append(torch.cat([asked, lower[b, tokens], memory]))
                masks.append(torch.cat([question_mask.new_ones(len(asked) + len(tokens)), latent_mask[b]]))
                places.append((b, len(asked), tokens))
        start = lower.new_full((batch, length), NEG)
        end = lower.new_full((batch, length), NEG)
        kind = lower.new_zeros(batch, len(ANSWER_TYPES))
        if not sequences:
            return AnswerLogits(start, end, kind)
        hidden = nn.utils.rnn.pad_sequence(sequences, batch_first=True)  # (S, T, H)
        mask = nn.utils.rnn.pad_sequence(masks, batch_first=True)  # (S, T)
        scores = additive_mask(mask, hidden.dtype)
        for layer in self.layers:
            hidden = layer(hidden, scores)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        span = self.span(hidden).float()  # (S, T, 2)
        kinds = self.kind(hidden[:, 0]).float()  # (S, 3): each paragraph's view from the question's [CLS]
        counts = lower.new_zeros(batch)
        start, end, kind = start.float(), end.float(), kind.float()
        for row, (b, offset, tokens) in enumerate(places):
            start[b, tokens] = span[row, offset:offset + len(tokens), 0]
            end[b, tokens] = span[row, offset:offset + len(tokens), 1]
            kind[b] = kind[b] + kinds[row]
            counts[b] += 1
        return AnswerLogits(start, end, kind / counts.clamp_min(1)[:, None].float())

    def choose_paragraphs(self, paragraph_scores: torch.Tensor, gold: torch.Tensor | None) -> torch.Tensor:
        """The paragraphs to read, best first: paragraph_scores (B, P) (-inf for no paragraph); `gold` (B, P) bool,
        in training: those first. → (B, min(P, answer_paragraphs)) paragraph ids, -1 past the real ones."""
        ranking = paragraph_scores.float()
        if gold is not None:
            ranking = ranking + gold.float() * 1e6  # finite scores stay below it, -inf stays -inf
        count = min(self.paragraphs, ranking.shape[1])
        values, chosen = ranking.topk(count, dim=1)
        return chosen.masked_fill(values == float("-inf"), -1)

    def losses(self, logits: AnswerLogits, batch: dict) -> torch.Tensor:
        """Per example: the type's cross-entropy plus, for span answers, -log of the probability of starting at
        any of the answer's start tokens and of ending at any of its end tokens (halved) → (B,); NaN for an
        unlabelled example."""
        kind = batch["answer_type"]
        type_nll = F.cross_entropy(logits.kind, kind.clamp_min(0), reduction="none")
        span_nll = (marginal_nll(logits.start, batch["answer_start"]) + marginal_nll(logits.end, batch["answer_end"])) / 2
        span_nll = torch.where(kind == 0, span_nll.nan_to_num(0.0), 0.0)  # an answer the head did not read: type only
        return torch.where(kind >= 0, type_nll + span_nll, torch.nan)

    @torch.no_grad()
    def decode(self, logits: AnswerLogits, batch: dict) -> torch.Tensor:
        """The best answer of each example as (B, 4) longs: type, sentence, first and last+1 character of the span
        in that sentence's text (`format_sentence`); the span is the best start + end score among spans of at
        most `max_span` tokens inside one sentence."""
        start, end = logits.start, logits.end
        sentence = batch["sentence_index"]
        length = start.shape[1]
        best = start.new_full(start.shape, float("-inf"))  # (B, L): the best span starting at each token
        best_end = torch.zeros_like(sentence)
        positions = torch.arange(length, device=start.device)
        for width in range(min(self.max_span, length)):
            ends = (positions + width).clamp_max(length - 1)  # (L,)
            same = (positions + width < length) & (sentence == sentence[:, ends])  # (B, L)
            score = torch.where(same & (start > NEG) & (end[:, ends] > NEG), start + end[:, ends], float("-inf"))
            better = score > best
            best = torch.where(better, score, best)
            best_end = torch.where(better, ends.expand_as(best_end), best_end)
        first = best.argmax(dim=1)  # (B,)
        last = best_end.gather(1, first[:, None]).squeeze(1)
        rows = torch.arange(len(first), device=first.device)
        return torch.stack([logits.kind.argmax(dim=1), sentence[rows, first], batch["token_start"][rows, first],
                            batch["token_end"][rows, last]], dim=1)


def marginal_nll(logits: torch.Tensor, marked: torch.Tensor) -> torch.Tensor:
    """-log(sum of the softmax over the marked tokens): logits (B, L), marked (B, L) bool → (B,), NaN where no
    marked token was read."""
    log_probs = logits.float().log_softmax(dim=1)
    picked = log_probs.masked_fill(~marked | (logits <= NEG), float("-inf")).logsumexp(dim=1)
    return torch.where(torch.isfinite(picked), -picked, torch.nan)


def answer_text(example_sentences: list[str], span: list[int]) -> str:
    """The answer one row of `decode` names, copied from the context's own characters: `example_sentences` are
    the example's formatted sentences, in order."""
    kind, sentence, first, last = span
    if ANSWER_TYPES[kind] != "span":
        return ANSWER_TYPES[kind]
    return example_sentences[sentence][first:last] if 0 <= sentence < len(example_sentences) else ""
