"""Baseline reader: T5 on `question: {q} context: {ctx}`, the context cut to fit `max_input_tokens`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from transformers import AutoTokenizer, T5ForConditionalGeneration

from ..config import ConfigError, TokenLimits, at_least, option
from .base import Generation, Reader, ReaderOutput, answer_losses
from ..data.collate import BaselineCollator


@dataclass
class BaselineConfig:
    max_input_tokens: int | None = option(512, "T5 input length, question and context together; None reads the "
                                               "whole context (T5's relative positions allow it)")

    def __post_init__(self):
        at_least(self, 8, "max_input_tokens")


class BaselineReader(Reader):
    kind = "baseline"

    @classmethod
    def build(cls, t5_name: str, config: BaselineConfig = BaselineConfig(),
              limits: TokenLimits = TokenLimits()) -> "BaselineReader":
        """From a Hub id or folder of a pretrained T5."""
        return cls(T5ForConditionalGeneration.from_pretrained(t5_name), AutoTokenizer.from_pretrained(t5_name),
                   config, limits)

    def collator(self, packing: str | None = None,
                 max_input_tokens: int | None | Literal["own"] = "own") -> BaselineCollator:
        """Batches as this reader reads them, or cut at another `max_input_tokens` (None: the whole context).
        `packing` (encoder windows) is the latent reader's: refused."""
        if packing is not None:
            raise ConfigError("window_packing: the baseline reader has no encoder windows")
        prefix = self.t5_tokenizer("context:", add_special_tokens=False)["input_ids"]
        return BaselineCollator(pad_id=self.t5_tokenizer.pad_token_id, eos_id=self.t5_tokenizer.eos_token_id,
                                context_prefix=prefix, max_input_tokens=self.config.max_input_tokens
                                if max_input_tokens == "own" else max_input_tokens)

    def forward(self, batch: dict[str, torch.Tensor]) -> ReaderOutput:
        # decoder inputs from the labels, but the loss computed here: one cross-entropy gives both reductions
        out = self.t5(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                      decoder_input_ids=self.t5.prepare_decoder_input_ids_from_labels(batch["labels"]))
        loss, answer = answer_losses(out.logits, batch["labels"])
        return ReaderOutput(loss=loss, answer_loss=loss, per_example={"loss": answer, "answer_loss": answer})

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor], **generation) -> Generation:
        return Generation(self.t5.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                           **generation))
