"""Collators: turn cached feature rows into padded batches (dicts of named tensors). No tokenization here."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .lexical import FEATURES as LEXICAL_FEATURES
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


def pad_rows(rows: list, width: int, dtype=torch.float32) -> torch.Tensor:
    """Zero-pad a list of (n_i, width) tables to (len(rows), max n_i, width)."""
    out = np.zeros((len(rows), max([1, *map(len, rows)]), width), dtype=np.float32)
    for i, row in enumerate(rows):
        if len(row):
            out[i, :len(row)] = row
    return torch.from_numpy(out).to(dtype)


def pad_squares(rows: list) -> torch.Tensor:
    """Zero-pad a list of (n_i, n_i) float tables to (len(rows), max n_i, max n_i)."""
    size = max([1, *map(len, rows)])
    out = np.zeros((len(rows), size, size), dtype=np.float32)
    for i, row in enumerate(rows):
        if len(row):
            out[i, :len(row), :len(row)] = row
    return torch.from_numpy(out)


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
    packing = None  # no encoder windows (the latent collator names its packing)

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
    token's state back in reading order; per-sentence fields for the sentence scorer.

    question_ids (B, Tq), question_mask; window_ids (W, Lw), window_mask: all windows of the batch, [CLS] ctx [SEP]
    (with `question_in_windows`: [CLS] question [SEP] ctx [SEP], each window still holding its own context tokens);
    context_index (B, L): for each context token, its row in the flattened (W * Lw) window states;
    context_mask (B, L); support, answer_span (B, L) bool; sentence_index (B, L); num_sentences (B,);
    sentence_mask, sentence_support (B, S) bool; sentence_paragraph, sentence_position (B, S): each sentence's
    paragraph and its place in it; encoder_question_ids (B, Tqe), encoder_question_mask: [CLS] question [SEP] in
    the context encoder's vocabulary; token_start, token_end (B, L): each context token's characters in its
    sentence's text; answer_start, answer_end (B, L) bool and answer_type (B,): an extractive head's targets; for
    rows encoded with lexical evidence, sentence_lexical (B, S, F) float
    (`data.lexical`) and paragraph_links (B, P, P) float (`data.lexical.paragraph_links`).
    """

    t5_pad_id: int
    t5_eos_id: int
    encoder_pad_id: int
    cls_id: int
    sep_id: int
    window_tokens: int  # encoder positions, [CLS] and [SEP] included
    question_in_windows: bool = False
    packing: str = "greedy"  # see windows.window_spans
    max_context_tokens: int | None = None  # read only the first N context tokens (None: the whole context)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if self.max_context_tokens is not None:
            rows = [cut_context(r, self.max_context_tokens) for r in rows]
        question_ids = pad([[*r["question_ids"], self.t5_eos_id] for r in rows], self.t5_pad_id)
        encoder_questions = [[self.cls_id, *r["context_question_ids"], self.sep_id] for r in rows]
        # [CLS] question [SEP] opens each window in `question_in_windows`; the context fills the rest
        heads = encoder_questions if self.question_in_windows else [[self.cls_id]] * len(rows)
        spans = [window_spans(r["sentence_index"], r["sentence_paragraph"], self.window_tokens - len(head) - 1,
                              self.packing) for r, head in zip(rows, heads)]
        width = max((len(head) + end - start + 1 for head, row in zip(heads, spans) for start, end in row),
                    default=2)  # Lw
        windows, flat = [], []
        for r, head, row_spans in zip(rows, heads, spans):
            index = np.empty(len(r["context_ids"]), dtype=np.int64)
            for start, end in row_spans:
                # token t's state: window number w, position len(head) + t - start → row w * Lw + ...
                index[start:end] = len(windows) * width + len(head) + np.arange(end - start)
                windows.append([*head, *r["context_ids"][start:end], self.sep_id])
            flat.append(index)
        # every context of the batch empty: one [CLS] [SEP] window keeps shapes valid (its tokens are masked)
        window_ids = pad(windows or [[self.cls_id, self.sep_id]], self.encoder_pad_id, min_length=width)
        encoder_question_ids = pad(encoder_questions, self.encoder_pad_id)
        sentence_support = [sentence_flags(r) for r in rows]
        return {
            **_common(rows),
            "question_ids": question_ids,
            "question_mask": question_ids != self.t5_pad_id,
            "encoder_question_ids": encoder_question_ids,
            "encoder_question_mask": encoder_question_ids != self.encoder_pad_id,
            "window_ids": window_ids,
            "window_mask": window_ids != self.encoder_pad_id,
            "context_index": pad(flat, 0, min_length=1),
            "context_mask": pad([np.ones(len(i)) for i in flat], 0, dtype=torch.bool, min_length=1),
            "support": pad([r["support"] for r in rows], 0, dtype=torch.bool, min_length=1),
            "answer_span": pad([r["answer_span"] for r in rows], 0, dtype=torch.bool, min_length=1),
            "sentence_index": pad([r["sentence_index"] for r in rows], 0, min_length=1),
            "num_sentences": torch.tensor([len(r["sentence_paragraph"]) for r in rows]),
            "sentence_mask": pad([self.visible_sentences(r) for r in rows], 0, dtype=torch.bool, min_length=1),
            "sentence_support": pad(sentence_support, 0, dtype=torch.bool, min_length=1),
            "sentence_paragraph": pad([r["sentence_paragraph"] for r in rows], 0, min_length=1),
            "sentence_position": pad([sentence_positions(r["sentence_paragraph"]) for r in rows], 0, min_length=1),
            **{name: pad([r[name] for r in rows], 0, min_length=1) for name in ("token_start", "token_end")},
            **{name: pad([r[name] for r in rows], 0, dtype=torch.bool, min_length=1)
               for name in ("answer_start", "answer_end")},
            "answer_type": torch.tensor([r["answer_type"] for r in rows]),
            **(lexical_fields(rows) if "sentence_lexical" in rows[0] else {}),
        }

    def visible_sentences(self, row: dict) -> np.ndarray:
        """Per sentence, whether the reader sees it: all of them, or with a cut context those with tokens left."""
        visible = np.ones(len(row["sentence_paragraph"]), dtype=bool)
        if self.max_context_tokens is not None:
            visible[:] = False
            visible[np.asarray(row["sentence_index"], dtype=np.int64)] = True
        return visible


TOKEN_COLUMNS = ("context_ids", "sentence_index", "support", "answer_span", "token_start", "token_end",
                 "answer_start", "answer_end")  # one entry per context token


def cut_context(row: dict, tokens: int) -> dict:
    """The row as a reader that sees only its first `tokens` context tokens reads it: what lies past the cut is
    gone, targets included (every sentence is still listed, so facts past the cut are still scored as missed)."""
    return {**row, **{name: row[name][:tokens] for name in TOKEN_COLUMNS}}


def lexical_fields(rows: list[dict]) -> dict[str, torch.Tensor]:
    """The lexical evidence of rows encoded with it (`FeatureSpec.lexical`)."""
    return {"sentence_lexical": pad_rows([r["sentence_lexical"] for r in rows], len(LEXICAL_FEATURES)),
            "paragraph_links": pad_squares([r["paragraph_links"] for r in rows])}


def sentence_flags(row: dict) -> np.ndarray:
    """Per sentence of a feature row, 1 if it is a supporting fact (any of its tokens is marked)."""
    flags = np.zeros(len(row["sentence_paragraph"]), dtype=np.int64)
    marked = np.asarray(row["sentence_index"], dtype=np.int64)[np.asarray(row["support"], dtype=bool)]
    flags[marked] = 1
    return flags


def sentence_positions(sentence_paragraph: list[int]) -> list[int]:
    """Each sentence's position inside its paragraph: [0, 0, 1, 2, 0, 1] for paragraphs [0, 1, 1, 1, 2, 2]."""
    positions, previous, count = [], None, 0
    for paragraph in sentence_paragraph:
        count = count + 1 if paragraph == previous else 0
        positions.append(count)
        previous = paragraph
    return positions
