"""Latent reader: the whole context through a context encoder and a latent bottleneck into T5's decoder.

    context ─ encoder (windows) ─ selector ─ latents (B, N, H) ─ project ─ × tanh(gate) ─┐
    question ─ T5 encoder ─ question states (B, Tq, D) ───────────────────────── concat ─┴─ T5 decoder ─ answer

T5 is wrapped, not forked: its decoder receives `encoder_outputs=[question states ; gated latents]` with the
matching attention mask, in training and in `generate` alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from .base import Generation, Reader, ReaderOutput, answer_losses
from .collate import LatentCollator
from .selector import LatentSelector, attention_mass_nll, mean_over_scored, sentence_scores


# What encoder families call attention-probability dropout: DistilBERT and ModernBERT, then BERT, RoBERTa, ELECTRA.
ATTENTION_DROPOUT_KEYS = ("attention_dropout", "attention_probs_dropout_prob")


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
    num_latents: int = 32
    """Learned latents: the length of the bottleneck the decoder sees besides the question."""
    selector_layers: int = 2
    """Cross-attention blocks in the selector."""
    selector_heads: int = 8
    """Attention heads of each selector block; must divide the encoder's width."""
    support_loss_weight: float = 1.0
    """Weight of -log(attention mass on supporting tokens) in the loss (0 turns it off)."""
    answer_span_loss_weight: float = 0.0
    """Weight of -log(attention mass on the answer's tokens inside the supporting sentences): it teaches the
    selector which words of a supporting sentence to read (0 turns it off; yes/no answers mark no tokens)."""
    encoder_attention_dropout: float | None = 0.0
    """Dropout on the context encoder's attention probabilities (None: the checkpoint's own). At 0, PyTorch's fused
    attention kernels run; with dropout, CPU attention falls back to the unfused path (docs/bench.md)."""
    gate_init: float = 0.0
    """Initial value of the tanh gate. 0 (Flamingo) keeps a pretrained T5's behaviour at the start; a T5 with
    random weights has nothing to keep, and at 0 its gate gets no consistent gradient (docs/demo.md)."""

    def __post_init__(self):
        for name in ("num_latents", "selector_layers", "selector_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("support_loss_weight", "answer_span_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.encoder_attention_dropout is not None and not 0 <= self.encoder_attention_dropout < 1:
            raise ValueError(f"encoder_attention_dropout must be in [0, 1), got {self.encoder_attention_dropout}")


class LatentReader(Reader):
    kind = "latent"

    def __init__(self, t5: T5ForConditionalGeneration, t5_tokenizer, encoder: nn.Module, encoder_tokenizer,
                 config: LatentConfig):
        super().__init__(t5, t5_tokenizer, config)
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # BERT's pooler is never used: no dead parameters under DDP
        self.encoder = encoder
        self.encoder_tokenizer = encoder_tokenizer
        width = encoder.config.hidden_size
        self.selector = LatentSelector(dim=width, num_latents=config.num_latents, depth=config.selector_layers,
                                       heads=config.selector_heads)
        self.project = nn.Linear(width, t5.config.d_model)
        # Flamingo-style: at the default tanh(0) = 0 the latents start silent
        self.gate = nn.Parameter(torch.tensor(float(config.gate_init)))

    @classmethod
    def build(cls, t5_name: str, encoder_name: str, config: LatentConfig = LatentConfig()) -> "LatentReader":
        """From Hub ids or folders of a pretrained T5 and a pretrained encoder (any `AutoModel` encoder)."""
        encoder_config = set_attention_dropout(AutoConfig.from_pretrained(encoder_name),
                                               config.encoder_attention_dropout)
        encoder = AutoModel.from_pretrained(encoder_name, config=encoder_config)
        return cls(T5ForConditionalGeneration.from_pretrained(t5_name), AutoTokenizer.from_pretrained(t5_name),
                   encoder, AutoTokenizer.from_pretrained(encoder_name), config)

    @property
    def context_tokenizer(self):
        return self.encoder_tokenizer

    def collator(self) -> LatentCollator:
        tok = self.encoder_tokenizer
        return LatentCollator(
            t5_pad_id=self.t5_tokenizer.pad_token_id, t5_eos_id=self.t5_tokenizer.eos_token_id,
            encoder_pad_id=tok.pad_token_id, cls_id=tok.cls_token_id, sep_id=tok.sep_token_id,
            window_tokens=window_positions(self.encoder))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"latent": [*self.selector.parameters(), *self.project.parameters(), self.gate],
                "t5": list(self.t5.parameters()), "encoder": list(self.encoder.parameters())}

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        super().set_gradient_checkpointing(enabled)
        if enabled:
            self.encoder.activation_checkpointing_enable()
        else:
            self.encoder.activation_checkpointing_disable()
        self.selector.gradient_checkpointing = enabled

    def _save_parts(self, out: Path) -> None:
        self.encoder.config.save_pretrained(out / "encoder")
        self.encoder_tokenizer.save_pretrained(out / "encoder")

    # --- the state builder, shared by forward and generate ---------------------------------------------------

    def context_states(self, batch) -> torch.Tensor:
        """All windows in one encoder batch, then every context token's state in reading order: (B, L, H)."""
        states = self.encoder(input_ids=batch["window_ids"], attention_mask=batch["window_mask"]).last_hidden_state
        return states.flatten(0, 1)[batch["context_index"]]  # (W, Lw, H) → (W*Lw, H) → (B, L, H)

    def encoder_states(self, batch, mask_latents: bool = False):
        """[question states ; gated latents] (B, Tq + N, D), its attention mask, and the selector's attention."""
        question = self.t5.encoder(input_ids=batch["question_ids"], attention_mask=batch["question_mask"])
        question = question.last_hidden_state  # (B, Tq, D)
        latents, attention = self.selector(self.context_states(batch), batch["context_mask"])  # (B, N, H), (B, N, L)
        gated = torch.tanh(self.gate) * self.project(latents)  # (B, N, D)
        states = torch.cat([question, gated.to(question.dtype)], dim=1)
        latent_mask = batch["question_mask"].new_full(gated.shape[:2], not mask_latents)
        return states, torch.cat([batch["question_mask"], latent_mask], dim=1), attention

    def forward(self, batch) -> ReaderOutput:
        states, mask, attention = self.encoder_states(batch)
        out = self.t5(encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=mask, use_cache=False,
                      decoder_input_ids=self.t5.prepare_decoder_input_ids_from_labels(batch["labels"]))
        answer, answer_each = answer_losses(out.logits, batch["labels"])  # (), (B,)
        support_each = attention_mass_nll(attention, batch["support"] & batch["context_mask"])  # (B,), NaN: none
        support = mean_over_scored(support_each)
        loss = answer + self.config.support_loss_weight * support
        loss_each = answer_each + self.config.support_loss_weight * support_each.nan_to_num(0.0)
        per_example = {"answer_loss": answer_each, "support_loss": support_each}
        answer_span = None
        if self.config.answer_span_loss_weight > 0:
            span_each = attention_mass_nll(attention, batch["answer_span"] & batch["context_mask"])
            answer_span = mean_over_scored(span_each)
            loss = loss + self.config.answer_span_loss_weight * answer_span
            loss_each = loss_each + self.config.answer_span_loss_weight * span_each.nan_to_num(0.0)
            per_example["answer_span_loss"] = span_each
        return ReaderOutput(loss=loss, answer_loss=answer, support_loss=support, answer_span_loss=answer_span,
                            per_example={"loss": loss_each, **per_example})

    @torch.no_grad()
    def generate(self, batch, mask_latents: bool = False, **generation) -> Generation:
        """Greedy or beam search (T5's `generate` expands states and mask per beam) and per-sentence scores."""
        states, mask, attention = self.encoder_states(batch, mask_latents=mask_latents)
        sequences = self.t5.generate(encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=mask,
                                     **generation)
        scores = sentence_scores(attention.mean(dim=1), batch["sentence_index"], batch["context_mask"],
                                 int(batch["num_sentences"].max()))
        return Generation(sequences, scores)
