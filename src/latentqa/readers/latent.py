"""Latent reader: the whole context through a context encoder and a latent bottleneck into T5's decoder.

    context ─ encoder (windows) ─ selector ─ latents (B, N, H) ─ project ─ × tanh(gate) ─┐
    question ─ T5 encoder ─ question states (B, Tq, D) ───────────────────────── concat ─┴─ T5 decoder ─ answer

T5 is wrapped, not forked: its decoder receives `encoder_outputs=[question states ; gated latents]` with the
matching attention mask, in training and in `generate` alike. With `answer_head: extract` the answer is a span of
the context instead (`answer.py`): live top encoder layers over the paragraphs the evidence heads rank first, the
gated latents as their memory; T5 is then not run.

The selector, defined here beside the reader, is Perceiver-style: learned latents cross-attend to every context
token. Each block is pre-norm cross-attention (latents → context) then a pre-norm feed-forward, both residual. The
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

Stored states (`state_dims`): every context state, computed, cached or read from an index, passes through an
int8-pcaD round trip with a projection fitted once on training contexts (`state_format.StoredStates`), so the reader
learns from what an index of that format keeps, and such an index stores through the same projection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from ..config import ConfigError, TokenLimits, at_least, option
from ..data.collate import LatentCollator
from ..data.windows import PACKINGS
from .answer import ExtractiveAnswerHead
from .base import Generation, Reader, ReaderOutput, answer_losses, set_activation_checkpointing
from .heads import LEXICAL_PRIOR, AttentionHead, Evidence, EvidenceHead, mean_over_scored
from .pairs import PairRanker
from .pooling import group_mean, masked_mean
from .scorer import SentenceScorer
from .state_cache import ContextStateCache, encoder_states
from .state_format import StoredStates


# What encoder families call attention-probability dropout: DistilBERT and ModernBERT, then BERT, RoBERTa, ELECTRA.
ATTENTION_DROPOUT_KEYS = ("attention_dropout", "attention_probs_dropout_prob")
CONDITIONING = ("none", "latents", "encoder")
SP_SCORERS = ("attention", "classifier")
ANSWER_HEADS = ("generate", "extract")
NESTED_TRAINING = ("draw", "every")


def set_attention_dropout(config: PretrainedConfig, value: float | None) -> PretrainedConfig:
    """Set the encoder config's attention dropout to `value` (None leaves it as it is)."""
    if value is not None:
        for key in ATTENTION_DROPOUT_KEYS:
            if hasattr(config, key):
                setattr(config, key, value)
    return config


def window_positions(encoder: nn.Module) -> int:
    """Tokens one encoder window can hold, [CLS] and [SEP] included. RoBERTa-family encoders number positions from
    padding_idx + 1, so their table of 514 entries holds 512 tokens; the others use every entry."""
    positions = encoder.config.max_position_embeddings
    padding_idx = getattr(getattr(encoder, "embeddings", None), "padding_idx", None)
    return positions - (padding_idx + 1) if padding_idx is not None else positions


@dataclass
class LatentConfig:
    # --- the context path
    encoder_attention_dropout: float | None = option(
        0.0, "dropout on the context encoder's attention probabilities (None: the checkpoint's own); at 0 the fused "
             "attention kernels run: on CPU a training step at 2,048 tokens takes 20% less time (docs/bench.md)")
    question_conditioning: str = option(
        "none", "where the question enters the context path: 'none' (question-blind latents), 'latents' (the "
                "latents cross-attend to the question; context states stay question-free and cacheable) or "
                "'encoder' (every encoder window reads [CLS] question [SEP] context [SEP])")
    window_packing: str = option(
        "greedy", "how the context fills encoder windows: 'greedy' (whole paragraphs up to the window size), "
                  "'paragraph' or 'sentence' (one per window: better states from an encoder trained on short texts, "
                  "more windows)")
    max_context_tokens: int | None = option(None, "read only the first N context tokens (None: the whole context); "
                                                  "the truncated comparison")
    state_dims: int = option(
        0, "read every context state as an `index --states int8-pcaD` index of D = state_dims stores it: projected on "
           "D directions fitted once on the training contexts before the first step (kept with the reader; an index "
           "of that format stores through them), int8, restored; so the reader learns from the states it will read "
           "(needs train.freeze_encoder; 0: off, the states as computed)")

    # --- the selector and its bottleneck
    num_latents: int = option(32, "learned latents: the length of the bottleneck the decoder sees besides the "
                                  "question")
    selector_layers: int = option(2, "cross-attention blocks of the selector")
    selector_heads: int = option(8, "heads per selector block (must divide the encoder width)")
    gate_init: float = option(
        0.0, "initial value of the tanh gate: 0 (Flamingo) keeps a pretrained T5's behaviour at the start; a T5 with "
             "random weights has nothing to keep, and at 0 its gate gets no consistent gradient (docs/demo.md)")
    selector_relevance: bool = option(
        False, "bias the selector's attention over each context token by a learned similarity of the question "
               "vector and the token's sentence (per head: temperature × cosine through a learned projection), so "
               "the latents find what the question asks from the encoder's states, without lexical features (needs "
               "a question-aware mode; states stay cacheable; docs/demo.md)")
    selector_lexical: bool = option(False, "bias the selector's attention over each context token by its "
                                           "sentence's lexical evidence (learned weights per head), so the latents "
                                           "read what names the question (needs a question-aware mode; states stay "
                                           "cacheable)")
    selector_lexical_scale: float = option(
        1.0, "multiplies the lexical attention bias (needs selector_lexical): Adam moves each of its few weights by "
             "about the learning rate a step, while the content logits come from thousands, so at 1 the bias "
             "cannot keep up (docs/demo.md); the many-facts demo uses 10")
    nested_latents: tuple[int, ...] = option(
        (), "nested latents: counts k of latents, ascending, the last equal to num_latents (e.g. [4,8,16,32]); each "
            "training step reads only the first k, so the first k latents of the trained reader are a reader of k "
            "latents, chosen per request (predict/eval/ask --latents K, HTTP \"latents\") (empty: off, one count)")
    nested_training: str = option("draw", "with nested_latents: 'draw' (each step reads one k drawn at random) or "
                                          "'every' (each step reads every k, losses averaged; costs more)")

    # --- the evidence heads
    support_loss_weight: float = option(1.0, "weight of -log(attention mass on supporting-fact tokens) (0: off)")
    answer_span_loss_weight: float = option(
        0.0, "weight of -log(attention mass on the answer's words inside the supporting sentences): teaches the "
             "selector which words to read (0: off; yes/no answers mark no tokens)")
    sp_scorer: str = option("attention", "supporting-fact scores: 'attention' (the selector's attention mass per "
                                         "sentence) or 'classifier' (a trained sentence scorer over the context "
                                         "states, question-aware in the question-aware modes)")
    sp_scorer_loss_weight: float = option(1.0, "weight of the sentence scorer's binary cross-entropy")
    sp_paragraph_loss_weight: float = option(
        0.0, "weight of a binary cross-entropy of each paragraph's best sentence logit against whether it holds a "
             "supporting fact: trains the ranking the paragraph rule uses (needs sp_scorer 'classifier'; 0: off)")
    sp_lexical: bool = option(False, "give the sentence scorer each sentence's lexical evidence: question words it "
                                     "and its paragraph hold, title matches, links between paragraphs "
                                     "(`data.lexical`; needs sp_scorer 'classifier' and a question-aware mode)")
    paragraph_ranker: bool = option(False, "choose the paragraph rule's paragraphs by a paragraph-pair ranker over "
                                           "lexical evidence and title links (`readers.pairs`), fitted on the "
                                           "training questions before training (needs a question-aware mode)")

    # --- the answer
    answer_head: str = option("generate", "how the answer is written: 'generate' (T5's decoder over [question ; "
                                          "latents], the original design) or 'extract' (type and span of the "
                                          "context, `readers.answer`; T5 is not run)")
    answer_layers: int = option(2, "extract: the encoder's top layers the answer head runs live over [question ; "
                                   "paragraph ; latents] (the lower ones stay cached, question-free)")
    answer_paragraphs: int = option(4, "extract: paragraphs the answer head reads, best ranked by the evidence heads")
    max_answer_span: int = option(30, "extract: longest answer span in context tokens, inside one sentence")

    def __post_init__(self):
        at_least(self, 1, "num_latents", "selector_layers", "selector_heads", "answer_layers", "answer_paragraphs",
                 "max_answer_span", "max_context_tokens")
        at_least(self, 0, "state_dims", "support_loss_weight", "answer_span_loss_weight", "sp_scorer_loss_weight",
                 "sp_paragraph_loss_weight")
        for name, allowed in (("question_conditioning", CONDITIONING), ("window_packing", PACKINGS),
                              ("sp_scorer", SP_SCORERS), ("answer_head", ANSWER_HEADS),
                              ("nested_training", NESTED_TRAINING)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        counts = self.nested_latents
        if counts and (counts[0] < 1 or list(counts) != sorted(set(counts)) or counts[-1] != self.num_latents):
            raise ConfigError(f"nested_latents must ascend from at least 1 to num_latents ({self.num_latents}), "
                              f"got {list(counts)}")
        blind = self.question_conditioning == "none"
        if self.sp_lexical and (self.sp_scorer != "classifier" or blind):
            raise ConfigError("sp_lexical needs sp_scorer 'classifier' and question_conditioning 'latents' or "
                              "'encoder'")
        if self.sp_paragraph_loss_weight > 0 and self.sp_scorer != "classifier":
            raise ConfigError("sp_paragraph_loss_weight trains the sentence scorer's logits: it needs sp_scorer "
                              "'classifier'")
        for name in ("selector_relevance", "selector_lexical", "paragraph_ranker"):
            if getattr(self, name) and blind:
                raise ConfigError(f"{name} compares the context with the question: it needs question_conditioning "
                                  "'latents' or 'encoder'")
        if self.selector_lexical_scale <= 0 or (self.selector_lexical_scale != 1.0 and not self.selector_lexical):
            raise ConfigError(f"selector_lexical_scale scales the lexical attention bias: it must be > 0 and needs "
                              f"selector_lexical, got {self.selector_lexical_scale}")
        if self.encoder_attention_dropout is not None and not 0 <= self.encoder_attention_dropout < 1:
            raise ConfigError(f"encoder_attention_dropout must be in [0, 1), got {self.encoder_attention_dropout}")


# --- the selector -------------------------------------------------------------------------------------------


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


# --- the reader ---------------------------------------------------------------------------------------------


@dataclass
class Reading:
    """What the context path hands on: the decoder's encoder states and what the evidence heads read."""

    states: torch.Tensor | None  # (B, Tq + N, D) [question states ; gated latents]; None: no T5 (extract)
    mask: torch.Tensor  # (B, Tq + N)
    evidence: Evidence
    answer: object | None = None  # the extractive head's `AnswerLogits`


class LatentReader(Reader):
    kind = "latent"
    parts = ("t5", "encoder")
    predicts_facts = True
    has_latents = True

    def __init__(self, t5: T5ForConditionalGeneration, t5_tokenizer, encoder: nn.Module, encoder_tokenizer,
                 config: LatentConfig, limits: TokenLimits = TokenLimits()):
        super().__init__(t5, t5_tokenizer, config, limits)
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # BERT's pooler is never used: no dead parameters under DDP
        self.encoder = encoder
        self.encoder_tokenizer = encoder_tokenizer
        width = encoder.config.hidden_size
        self.selector = LatentSelector(dim=width, num_latents=config.num_latents, depth=config.selector_layers,
                                       heads=config.selector_heads,
                                       question_aware=config.question_conditioning == "latents")
        self.project = nn.Linear(width, t5.config.d_model)
        # Flamingo-style: at the default tanh(0) = 0 the latents start silent. Shape (1,), not a scalar: FSDP and
        # DeepSpeed refuse 0-dim parameters
        self.gate = nn.Parameter(torch.full((1,), float(config.gate_init)))
        self.relevance = SentenceRelevance(dim=width, heads=config.selector_heads) \
            if config.selector_relevance else None
        # per selector head, the weight of each lexical feature in the attention logits; every head starts from
        # the prior, which ranks real sentences well untrained (docs/real.md)
        self.lexical_bias = nn.Parameter(torch.tensor(LEXICAL_PRIOR).repeat(config.selector_heads, 1)) \
            if config.selector_lexical else None
        # the evidence heads; the attribute names are the weights' names in saved folders
        self.attention_head = AttentionHead(config.support_loss_weight, config.answer_span_loss_weight)
        self.scorer = SentenceScorer(dim=width, heads=config.selector_heads,
                                     question_aware=config.question_conditioning != "none",
                                     lexical=config.sp_lexical, loss_weight=config.sp_scorer_loss_weight,
                                     paragraph_loss_weight=config.sp_paragraph_loss_weight) \
            if config.sp_scorer == "classifier" else None
        self.pair_ranker = PairRanker() if config.paragraph_ranker else None
        self.answer = ExtractiveAnswerHead(encoder, config.answer_layers, config.answer_paragraphs,
                                           config.max_answer_span) if config.answer_head == "extract" else None
        stored_width = width * len(self.state_layers)
        if config.state_dims > stored_width:
            raise ConfigError(f"latent.state_dims={config.state_dims}: this reader keeps {stored_width} values a "
                              "context token; project on at most as many")
        self.stored_states = StoredStates(stored_width, config.state_dims) if config.state_dims else None
        self.encoder_frozen = False
        self.state_cache: ContextStateCache | None = None

    @classmethod
    def build(cls, t5_name: str, encoder_name: str, config: LatentConfig = LatentConfig(),
              limits: TokenLimits = TokenLimits()) -> "LatentReader":
        """From Hub ids or folders of a pretrained T5 and a pretrained encoder (any `AutoModel` encoder)."""
        encoder_config = set_attention_dropout(AutoConfig.from_pretrained(encoder_name),
                                               config.encoder_attention_dropout)
        encoder = AutoModel.from_pretrained(encoder_name, config=encoder_config)
        return cls(T5ForConditionalGeneration.from_pretrained(t5_name), AutoTokenizer.from_pretrained(t5_name),
                   encoder, AutoTokenizer.from_pretrained(encoder_name), config, limits)

    @property
    def context_tokenizer(self):
        return self.encoder_tokenizer

    @property
    def heads(self) -> list[EvidenceHead]:
        """The selector's attention, then the configured heads."""
        return [head for head in (self.attention_head, self.scorer, self.pair_ranker) if head is not None]

    @property
    def latent_counts(self) -> tuple[int, ...]:
        """The numbers of latents this reader was trained to answer from: `nested_latents`, else all of them."""
        return self.config.nested_latents or (self.config.num_latents,)

    def latent_refusal(self, count: int | None) -> str | None:
        if count is None or count in self.latent_counts:
            return None
        trained = self.latent_counts
        counts = f"{', '.join(map(str, trained[:-1]))} or {trained[-1]}" if len(trained) > 1 else str(trained[0])
        hint = "" if self.config.nested_latents else " (latent.nested_latents trains a reader for several)"
        return f"this reader was trained to read {counts} latents{hint}, got {count}"

    @property
    def sentence_head(self) -> EvidenceHead:
        """The head whose scores choose the sentences: the scorer where there is one."""
        return self.scorer if self.scorer is not None else self.attention_head

    @property
    def paragraph_head(self) -> EvidenceHead | None:
        return next((head for head in self.heads if head.ranks_paragraphs), None)

    @property
    def reads_lexical_evidence(self) -> bool:
        return self.lexical_bias is not None or super().reads_lexical_evidence

    def collator(self, packing: str | None = None) -> LatentCollator:
        """Batches as this reader reads them; `packing` reads the context in other windows than its own
        (`window_packing`)."""
        if packing is not None and packing not in PACKINGS:
            raise ConfigError(f"window_packing must be one of {PACKINGS}, got {packing!r}")
        tok = self.encoder_tokenizer
        return LatentCollator(
            t5_pad_id=self.t5_tokenizer.pad_token_id, t5_eos_id=self.t5_tokenizer.eos_token_id,
            encoder_pad_id=tok.pad_token_id, cls_id=tok.cls_token_id, sep_id=tok.sep_token_id,
            window_tokens=window_positions(self.encoder),
            question_in_windows=self.config.question_conditioning == "encoder",
            packing=packing or self.config.window_packing, max_context_tokens=self.config.max_context_tokens)

    @property
    def state_layers(self) -> tuple[int, ...]:
        """The encoder's hidden states kept per context token (indices into `hidden_states`), side by side: the
        last layer's, after the answer head's split layer where it has one."""
        return (-1,) if self.answer is None else (self.answer.split, -1)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        latent = [*self.selector.parameters(), *self.project.parameters(), self.gate,
                  *(self.relevance.parameters() if self.relevance is not None else ()),
                  *((self.lexical_bias,) if self.lexical_bias is not None else ()),
                  *(p for head in self.heads for p in head.parameters())]
        groups = {"latent": latent, "t5": list(self.t5.parameters()), "encoder": list(self.encoder.parameters())}
        return {**groups, "answer": list(self.answer.parameters())} if self.answer is not None else groups

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        super().set_gradient_checkpointing(enabled)
        set_activation_checkpointing(self.encoder, enabled)
        self.selector.gradient_checkpointing = enabled

    def _save_parts(self, out: Path) -> None:
        self.encoder.config.save_pretrained(out / "encoder")
        self.encoder_tokenizer.save_pretrained(out / "encoder")

    # --- a frozen encoder and its cached states --------------------------------------------------------------

    def freeze_encoder(self) -> None:
        """No gradient and no dropout in the context encoder from now on: its states are a function of its input."""
        self.encoder.requires_grad_(False)
        self.encoder_frozen = True
        self.encoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def cache_refusal(self, inference: bool = False) -> str | None:
        """Why context states cannot be cached (None: they can): they must be a function of the context alone.
        `inference`: asked for reading without gradients (predict, serving), where a trainable encoder in eval
        mode gives the same states as a frozen one."""
        if self.config.question_conditioning == "encoder":
            return "question_conditioning 'encoder' makes every context state depend on the question"
        if self.encoder.training:
            return "the context encoder is in training mode (dropout): freeze it (train.freeze_encoder=true)"
        if not inference and any(p.requires_grad for p in self.encoder.parameters()):
            return "the context encoder is being trained (freeze it: train.freeze_encoder=true)"
        return None

    def index_refusal(self) -> str | None:
        """Stored per paragraph, states must not depend on the question nor on the paragraphs beside it."""
        if self.config.question_conditioning == "encoder":
            return "question_conditioning 'encoder' makes every context state depend on the question"
        if self.config.window_packing == "greedy":
            return ("window_packing 'greedy' packs several paragraphs into one encoder window (a reader with "
                    "'paragraph' or 'sentence' windows can be indexed)")
        return None

    def use_state_cache(self, cache: ContextStateCache | None, inference: bool = False) -> None:
        """Read context states through `cache` (None: always run the encoder); `inference` as in `cache_refusal`:
        the cache is then read only where no gradient is being recorded."""
        refusal = self.cache_refusal(inference) if cache is not None else None
        if refusal:
            raise ValueError(f"context states cannot be cached: {refusal}")
        self.state_cache = cache

    # --- the state builder, shared by forward and generate ---------------------------------------------------

    def context_states(self, batch) -> torch.Tensor:
        """Every context token's state in reading order, (B, L, H): as computed, or as a projected index stores
        them (`latent.state_dims`)."""
        states = self.computed_states(batch)
        return states if self.stored_states is None else self.stored_states(states)

    def computed_states(self, batch) -> torch.Tensor:
        """All windows in one encoder batch (or from the state cache, or an index), then every context token's state
        in reading order: (B, L, H)."""
        if self.state_cache is not None and self.cache_refusal(inference=not torch.is_grad_enabled()) is None:
            states = self.state_cache.encode(self.encoder, batch["window_ids"], batch["window_mask"],
                                             self.state_layers)
        else:
            states = encoder_states(self.encoder, batch["window_ids"], batch["window_mask"], self.state_layers)
        return states.flatten(0, 1)[batch["context_index"]]  # (W, Lw, H) → (W*Lw, H) → (B, L, H)

    @torch.no_grad()
    def fit_stored_states(self, batches) -> dict[str, float]:
        """Fit the projection `latent.state_dims` reads through on the context tokens of these collated batches."""
        tokens = [self.computed_states(batch)[batch["context_mask"].bool()].float().cpu() for batch in batches]
        return self.stored_states.fit(torch.cat(tokens))

    def question_states(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The context encoder on the question alone, [CLS] q [SEP]: the states (B, Tqe, H) of each kept layer
        (`state_layers`), last one last, and the last layer's mean (B, H), the sentence embedding of
        all-MiniLM-style encoders."""
        mask = batch["encoder_question_mask"]
        states = encoder_states(self.encoder, batch["encoder_question_ids"], mask, self.state_layers)
        layers = states.chunk(len(self.state_layers), dim=-1)
        return layers, masked_mean(layers[-1], mask)

    def context_bias(self, batch, context: torch.Tensor, question: torch.Tensor | None) -> torch.Tensor | None:
        """Per head and context token, what the selector's attention logits get besides the content match: the
        sentence relevance (`selector_relevance`) plus the weighted lexical evidence of the token's sentence times
        `selector_lexical_scale` (`selector_lexical`): (B, heads, L), or None with neither."""
        bias = None
        if self.relevance is not None:
            bias = self.relevance(context, batch["context_mask"], batch["sentence_index"],
                                  batch["sentence_mask"].shape[1], question)
        if self.lexical_bias is not None:
            evidence = batch["sentence_lexical"]  # (B, S, F)
            per_token = evidence.gather(1, batch["sentence_index"][..., None].expand(-1, -1, evidence.shape[-1]))
            lexical = self.config.selector_lexical_scale * torch.einsum("blf,hf->bhl", per_token, self.lexical_bias)
            bias = lexical if bias is None else bias + lexical
        return bias

    def read(self, batch, mask_latents: bool = False, latents: int | torch.Tensor | None = None) -> Reading:
        """[question states ; gated latents], their mask, and what the evidence heads read; with the extractive
        head, its logits instead of T5's states. `latents`: how many of the latents the answer and the selector's
        attention are read from, one count for the batch or one per example (B,) (None: all)."""
        return self.read_each(batch, [latents], mask_latents)[0]

    def read_each(self, batch, counts: list, mask_latents: bool = False) -> list[Reading]:
        """One reading per entry of `counts` (each as `read`'s `latents`); the context path and the selector run
        once, over as many latents as the largest count reads."""
        context = self.context_states(batch)  # (B, L, H), or (B, L, 2H): the answer head's split layer first
        lower, context = context.chunk(2, dim=-1) if self.answer is not None else (None, context)
        blind = self.config.question_conditioning == "none"
        asked, question_vector = self.question_states(batch) if not blind or self.answer is not None else (None, None)
        selector_question = (asked[-1], batch["encoder_question_mask"]) \
            if self.config.question_conditioning == "latents" else ()
        bias = self.context_bias(batch, context, None if blind else question_vector)  # (B, heads, L) or None
        counts = [self.counts_per_example(count, batch) for count in counts]  # ((B,), the largest) each
        latents, attention = self.selector(context, batch["context_mask"], *selector_question, context_bias=bias,
                                           num_latents=max(width for _, width in counts))  # (B, N, H), (B, N, L)
        readings = []
        for count, width in counts:
            read = torch.arange(width, device=count.device) < count[:, None]  # (B, k): the latents each example reads
            # the attention the evidence heads read: averaged over the latents read
            mass = (attention[:, :width] * read[..., None]).sum(dim=1) / count[:, None]  # (B, L)
            evidence = Evidence(context, None if blind else question_vector, mass)
            readings.append(self.answer_reading(batch, latents[:, :width], read & (not mask_latents), evidence,
                                                lower, asked))
        return readings

    def counts_per_example(self, latents: int | torch.Tensor | None, batch) -> tuple[torch.Tensor, int]:
        """`read`'s `latents` as one count per example (B,) on the batch's device, and the largest. Checked on the
        host: an int as it is; per-example counts come from the host (a request's) and are read there once."""
        values = [self.config.num_latents if latents is None else latents] if not torch.is_tensor(latents) \
            else latents.tolist()
        if not all(1 <= value <= self.config.num_latents for value in values):
            raise ValueError(f"latent counts must be between 1 and {self.config.num_latents}, got {values}")
        device = batch["context_mask"].device
        count = torch.as_tensor(values if torch.is_tensor(latents) else values[0], device=device)
        return count.long().expand(len(batch["context_mask"])), max(values)

    def answer_reading(self, batch, latents: torch.Tensor, latent_mask: torch.Tensor, evidence: Evidence,
                       lower: torch.Tensor | None, asked: tuple | None) -> Reading:
        """What the answer reads, from the latents read (B, k, H) and their mask (B, k)."""
        if self.answer is not None:
            logits = self.answer(lower, asked[0], batch["encoder_question_mask"], torch.tanh(self.gate) * latents,
                                 latent_mask, token_paragraphs(batch), batch["context_mask"],
                                 self.answer.choose_paragraphs(self.paragraph_ranking(evidence, batch),
                                                               supporting_paragraphs(batch) if self.training else None))
            return Reading(None, latent_mask, evidence, logits)
        question = self.t5.encoder(input_ids=batch["question_ids"], attention_mask=batch["question_mask"])
        question = question.last_hidden_state  # (B, Tq, D)
        gated = torch.tanh(self.gate) * self.project(latents)  # (B, k, D)
        states = torch.cat([question, gated.to(question.dtype)], dim=1)
        return Reading(states, torch.cat([batch["question_mask"], latent_mask.to(batch["question_mask"].dtype)], dim=1),
                       evidence)

    @torch.no_grad()
    def paragraph_ranking(self, evidence: Evidence, batch) -> torch.Tensor:
        """Each paragraph's score (B, P), -inf for none: the paragraph head's where there is one, else its best
        sentence's."""
        head = self.paragraph_head or self.sentence_head
        scores = head.scores(evidence, batch).float().masked_fill(~batch["sentence_mask"], float("-inf"))  # (B, S)
        paragraphs = int(batch["sentence_paragraph"].max()) + 1
        ranking = scores.new_full((len(scores), paragraphs), float("-inf"))
        return ranking.scatter_reduce(1, batch["sentence_paragraph"], scores, reduce="amax")

    def training_counts(self) -> list[int | None]:
        """The latent counts one forward reads: all of them, or in training with `nested_latents` one count drawn
        per step (`nested_training` 'draw') or every count ('every')."""
        counts = self.config.nested_latents
        if not (self.training and counts):
            return [None]
        if self.config.nested_training == "every":
            return list(counts)
        return [counts[int(torch.randint(len(counts), ()))]]

    def forward(self, batch) -> ReaderOutput:
        outputs = [self.losses(reading, batch) for reading in self.read_each(batch, self.training_counts())]
        return outputs[0] if len(outputs) == 1 else mean_output(outputs)

    def losses(self, reading: Reading, batch) -> ReaderOutput:
        """The answer's loss and each evidence head's, weighted and summed, from one reading."""
        if self.answer is not None:
            answer_each = self.answer.losses(reading.answer, batch)  # (B,)
            answer = mean_over_scored(answer_each)
        else:
            out = self.t5(encoder_outputs=BaseModelOutput(last_hidden_state=reading.states),
                          attention_mask=reading.mask, use_cache=False,
                          decoder_input_ids=self.t5.prepare_decoder_input_ids_from_labels(batch["labels"]))
            answer, answer_each = answer_losses(out.logits, batch["labels"])  # (), (B,)
        auxiliary = [loss for head in self.heads for loss in head.losses(reading.evidence, batch)]
        loss, loss_each = answer, answer_each
        per_example, means = {"answer_loss": answer_each}, {}
        for name, weight, each in auxiliary:
            means[name] = mean_over_scored(each)
            loss = loss + weight * means[name]
            loss_each = loss_each + weight * each.nan_to_num(0.0)
            per_example[name] = each
        return ReaderOutput(loss=loss, answer_loss=answer, auxiliary=means,
                            per_example={"loss": loss_each, **per_example})

    @torch.no_grad()
    def generate(self, batch, mask_latents: bool = False, latents: int | torch.Tensor | None = None,
                 **generation) -> Generation:
        """Greedy or beam search (T5's `generate` expands states and mask per beam), the sentence head's scores
        and, with a paragraph head (the pair ranker), each sentence's paragraph's score; `latents` as in `read`."""
        reading = self.read(batch, mask_latents=mask_latents, latents=latents)
        if self.answer is not None:
            spans = self.answer.decode(reading.answer, batch)
            sequences = spans.new_full((len(spans), 1), self.t5_tokenizer.pad_token_id)  # no text generated
        else:
            spans = None
            sequences = self.t5.generate(encoder_outputs=BaseModelOutput(last_hidden_state=reading.states),
                                         attention_mask=reading.mask, **generation)
        paragraphs = self.paragraph_head
        return Generation(sequences, self.sentence_head.scores(reading.evidence, batch),
                          paragraphs.scores(reading.evidence, batch) if paragraphs is not None else None, spans)


def mean_output(outputs: list[ReaderOutput]) -> ReaderOutput:
    """The mean of several readings' outputs, part by part (nested latents read at every count)."""
    mean = (lambda values: torch.stack(values).mean(dim=0))
    return ReaderOutput(loss=mean([o.loss for o in outputs]), answer_loss=mean([o.answer_loss for o in outputs]),
                        auxiliary={name: mean([o.auxiliary[name] for o in outputs]) for name in outputs[0].auxiliary},
                        per_example={name: mean([o.per_example[name] for o in outputs])
                                     for name in outputs[0].per_example})


def token_paragraphs(batch) -> torch.Tensor:
    """Each context token's paragraph (B, L)."""
    return batch["sentence_paragraph"].gather(1, batch["sentence_index"])


def supporting_paragraphs(batch) -> torch.Tensor:
    """(B, P) bool: the paragraphs holding a supporting fact (what training reads first)."""
    paragraphs = int(batch["sentence_paragraph"].max()) + 1
    flags = batch["sentence_support"] & batch["sentence_mask"]
    gold = torch.zeros(len(flags), paragraphs, dtype=torch.long, device=flags.device)
    return gold.scatter_reduce(1, batch["sentence_paragraph"], flags.long(), reduce="amax").bool()
