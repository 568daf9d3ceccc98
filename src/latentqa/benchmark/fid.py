"""Fusion-in-Decoder, for comparison only: T5's encoder reads `question + paragraph` for each paragraph on its own,
the decoder attends over all the encoded passages at once (Izacard & Grave, 2021)."""
from __future__ import annotations

import torch
from transformers.modeling_outputs import BaseModelOutput

from ..readers.base import Generation, Reader, ReaderOutput


class FiDReader(Reader):
    kind = "fid"

    def encoder_states(self, batch):
        b, passages, length = batch["passage_ids"].shape
        # The encoder sees each passage alone: fold passages into the batch, then lay them side by side.
        states = self.t5.encoder(input_ids=batch["passage_ids"].view(b * passages, length),
                                 attention_mask=batch["passage_mask"].view(b * passages, length)).last_hidden_state
        return states.view(b, passages * length, -1), batch["passage_mask"].view(b, passages * length)

    def forward(self, batch) -> ReaderOutput:
        states, mask = self.encoder_states(batch)
        out = self.t5(encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=mask,
                      labels=batch["labels"], use_cache=False)
        return ReaderOutput(loss=out.loss, answer_loss=out.loss)

    @torch.no_grad()
    def generate(self, batch, **generation) -> Generation:
        states, mask = self.encoder_states(batch)
        return Generation(self.t5.generate(encoder_outputs=BaseModelOutput(last_hidden_state=states),
                                           attention_mask=mask, **generation))
