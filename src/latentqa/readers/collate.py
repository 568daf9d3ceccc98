"""Collators: turn cached feature rows into padded batches (dicts of named tensors). No tokenization here."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .windows import window_spans


class IndexedRows(Dataset):
    """Feature rows with their position, so predictions map back to example ids after sharding."""

    def __init__(self, features):
        self.features = features

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return {**self.features[i], "index": i}


def pad(rows: list, value: int, dtype=torch.long, min_length: int = 0) -> torch.Tensor:
    """Right-pad a list of 1-D sequences to (len(rows), max length)."""
    length = max([min_length, *map(len, rows)])
    out = np.full((len(rows), length), value, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return torch.from_numpy(out).to(dtype)


def _common(rows: list[dict]) -> dict[str, torch.Tensor]:
    labels = pad([r["labels"] for r in rows], -100)  # -100: ignored by the loss
    return {"index": torch.tensor([r["index"] for r in rows]), "labels": labels}


@dataclass
class BaselineCollator:
    """`question: {q} context: {ctx}</s>`, the context cut so the whole input fits `max_input_tokens`
    (None: the whole context, which T5's relative positions allow)."""

    pad_id: int
    eos_id: int
    context_prefix: list[int]  # T5 ids of "context:"
    max_input_tokens: int | None = 512

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        inputs, context_kept = [], []
        for r in rows:
            head = [*r["question_ids"], *self.context_prefix]
            budget = len(r["context_ids"]) if self.max_input_tokens is None else max(
                self.max_input_tokens - len(head) - 1, 0)
            kept = r["context_ids"][:budget]
            inputs.append([*head, *kept, self.eos_id])
            context_kept.append(len(kept))
        input_ids = pad(inputs, self.pad_id)
        return {**_common(rows), "input_ids": input_ids, "attention_mask": input_ids != self.pad_id,
                "context_kept": torch.tensor(context_kept)}


@dataclass
class LatentCollator:
    """Question for T5's encoder; the whole context as encoder windows plus the index that puts every context
    token's state back in reading order.

    question_ids (B, Tq), question_mask; window_ids (W, Lw), window_mask: all windows of the batch, [CLS] ctx [SEP];
    context_index (B, L): for each context token, its row in the flattened (W * Lw) window states;
    context_mask (B, L); support, answer_span (B, L) bool; sentence_index (B, L); num_sentences (B,).
    """

    t5_pad_id: int
    t5_eos_id: int
    encoder_pad_id: int
    cls_id: int
    sep_id: int
    window_tokens: int  # encoder positions, [CLS] and [SEP] included

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        question_ids = pad([[*r["question_ids"], self.t5_eos_id] for r in rows], self.t5_pad_id)
        capacity = self.window_tokens - 2
        spans = [window_spans(r["sentence_index"], r["sentence_paragraph"], capacity) for r in rows]
        width = max((end - start for row in spans for start, end in row), default=0) + 2  # Lw
        windows, flat = [], []
        for r, row_spans in zip(rows, spans):
            index = np.empty(len(r["context_ids"]), dtype=np.int64)
            for start, end in row_spans:
                # token t's state: window number w, position 1 + t - start (after [CLS]) → row w * Lw + ...
                index[start:end] = len(windows) * width + 1 + np.arange(end - start)
                windows.append([self.cls_id, *r["context_ids"][start:end], self.sep_id])
            flat.append(index)
        # every context of the batch empty: one [CLS] [SEP] window keeps shapes valid (its tokens are masked)
        window_ids = pad(windows or [[self.cls_id, self.sep_id]], self.encoder_pad_id, min_length=width)
        return {
            **_common(rows),
            "question_ids": question_ids,
            "question_mask": question_ids != self.t5_pad_id,
            "window_ids": window_ids,
            "window_mask": window_ids != self.encoder_pad_id,
            "context_index": pad(flat, 0, min_length=1),
            "context_mask": pad([np.ones(len(i)) for i in flat], 0, dtype=torch.bool, min_length=1),
            "support": pad([r["support"] for r in rows], 0, dtype=torch.bool, min_length=1),
            "answer_span": pad([r["answer_span"] for r in rows], 0, dtype=torch.bool, min_length=1),
            "sentence_index": pad([r["sentence_index"] for r in rows], 0, min_length=1),
            "num_sentences": torch.tensor([len(r["sentence_paragraph"]) for r in rows]),
        }
