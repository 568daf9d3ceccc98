"""Tokenize examples once into the features both readers train on, and cache them on disk.

The context is tokenized sentence by sentence (`"{title}: {sentence}"`, no special tokens) and the pieces are
concatenated, so every context token knows its sentence and the support mask covers exactly the supporting
sentences. Nothing is truncated here: the readers decide what they read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import numpy as np

from ..atomic import discard, publish_or_adopt, remove_dead_temps, temp_path
from ..config import ConfigError, TokenLimits, option
from ..progress import progress_bar
from .examples import Example
from .lexical import lexical_features, paragraph_links

log = logging.getLogger(__name__)

FEATURE_VERSION = 7  # bump when the features change meaning, so old caches are not reused
LEXICAL_COLUMNS = ("sentence_lexical", "paragraph_links")


@dataclass(frozen=True)
class FeatureSpec(TokenLimits):
    """How examples become a reader's feature rows. Saved with the reader, so predict, eval, serving and the
    Python API feed it exactly as it was trained."""

    lexical: bool = option(False, f"also each sentence's lexical evidence and the paragraph links "
                                  f"({', '.join(LEXICAL_COLUMNS)}), for the parts of a reader that read them")

    def to_dict(self) -> dict:
        return asdict(self)


def format_sentence(title: str, sentence: str) -> str:
    return f"{title}: {sentence.strip()}"


def question_text(question: str) -> str:
    return f"question: {question.strip()}"


ANSWER_TYPES = ("span", "yes", "no")  # what an extractive reader predicts first; -1 in `answer_type`: unlabelled


def answer_type(answer: str | None) -> int:
    """The index of the answer's type in `ANSWER_TYPES`, -1 for an unlabelled example."""
    if answer is None:
        return -1
    text = answer.strip().lower()
    return ANSWER_TYPES.index(text) if text in ("yes", "no") else 0


def answer_occurrences(text: str, answer: str | None) -> list[tuple[int, int]]:
    """Character spans of the case-insensitive whole-word occurrences of `answer` in `text`; none for yes/no."""
    if answer_type(answer) != 0 or not answer.strip():
        return []
    return [m.span() for m in re.finditer(rf"(?<!\w){re.escape(answer.strip())}(?!\w)", text, re.IGNORECASE)]


def answer_token_mask(text: str, offsets: list[tuple[int, int]], answer: str | None) -> list[int]:
    """Per token of `text` (character `offsets`), 1 if it overlaps a case-insensitive whole-word occurrence of
    `answer`. Yes/no answers are not spans and mark nothing."""
    spans = answer_occurrences(text, answer)
    return [int(any(start < span_end and span_start < end for span_start, span_end in spans))
            for start, end in offsets]


def answer_boundaries(text: str, offsets: list[tuple[int, int]], answer: str | None) -> tuple[list[int], list[int]]:
    """Per token of `text`, 1 if an occurrence of `answer` starts in it, and 1 if one ends in it: the targets of
    an extractive answer head."""
    starts, ends = [0] * len(offsets), [0] * len(offsets)
    for span_start, span_end in answer_occurrences(text, answer):
        inside = [i for i, (start, end) in enumerate(offsets) if start < span_end and span_start < end]
        if inside:
            starts[inside[0]], ends[inside[-1]] = 1, 1
    return starts, ends


def encode_examples(
    examples: list[Example],
    spec: FeatureSpec,
    *,
    question_tokenizer,
    context_tokenizer,
    batch_size: int = 512,
    progress: bool = True,
) -> dict[str, list]:
    """Features as columns (one entry per example):

    question_ids   T5 ids of `question: {q}`, no EOS (the collators add it), at most spec.max_question_tokens - 1
    context_question_ids  context-tokenizer ids of the question itself, no special tokens, at most
                   spec.max_question_tokens - 1 (what a question-aware latent reader's encoder reads)
    labels         T5 ids of the answer with EOS, at most spec.max_answer_tokens ([] when unlabelled)
    context_ids    context-tokenizer ids of all sentences, concatenated, untruncated
    sentence_index per context token, the index of its sentence in `Example.sentence_keys()`
    support        per context token, 1 if its sentence is a supporting fact
    answer_span    per context token, 1 if it is part of the answer inside a supporting sentence
    sentence_paragraph  per sentence, the index of its paragraph
    token_start, token_end  per context token, where its characters begin and end in its sentence's text
                   (`format_sentence`): an extracted answer copies the context's own characters
    answer_start, answer_end  per context token, 1 if an occurrence of the answer starts / ends in it: inside the
                   supporting sentences, or anywhere in the context where they hold none
    answer_type    the answer's index in `ANSWER_TYPES` (-1: unlabelled)
    and with `spec.lexical` only:
    sentence_lexical    per sentence, its lexical evidence (`lexical.FEATURES`)
    paragraph_links     per pair of paragraphs (a, b), how much of b's title a names (`lexical.paragraph_links`)
    """
    if not getattr(context_tokenizer, "is_fast", False):  # only `tokenizers` backends report character offsets
        raise ConfigError(f"context tokenizer {getattr(context_tokenizer, 'name_or_path', context_tokenizer)!r} has no "
                          "fast (tokenizers) backend: its character offsets are needed to mark answer spans")
    columns: dict[str, list] = {k: [] for k in (
        "id", "question_ids", "context_question_ids", "labels", "context_ids", "sentence_index", "support", "answer_span",
        "sentence_paragraph", "token_start", "token_end", "answer_start", "answer_end", "answer_type",
        *(LEXICAL_COLUMNS if spec.lexical else ()))}
    for start in progress_bar(range(0, len(examples), batch_size), desc="tokenize", unit="batch", disable=not progress):
        chunk = examples[start:start + batch_size]
        questions = question_tokenizer(
            [question_text(ex.question) for ex in chunk], add_special_tokens=False,
            truncation=True, max_length=spec.max_question_tokens - 1)["input_ids"]
        context_questions = context_tokenizer(
            [ex.question.strip() for ex in chunk], add_special_tokens=False, truncation=True,
            max_length=spec.max_question_tokens - 1)["input_ids"]
        answers = question_tokenizer(
            [ex.answer or "" for ex in chunk], truncation=True, max_length=spec.max_answer_tokens)["input_ids"]
        sentences = [format_sentence(p.title, s) for ex in chunk for p in ex.paragraphs for s in p.sentences]
        # verbose=False: contexts longer than the encoder are expected; the readers window them
        # offsets: where each token lies in its sentence's text, to mark the answer's tokens
        encoded = context_tokenizer(sentences, add_special_tokens=False, verbose=False, return_offsets_mapping=True) \
            if sentences else {"input_ids": [], "offset_mapping": []}
        sentence_ids, sentence_offsets = encoded["input_ids"], encoded["offset_mapping"]
        offset = 0
        for ex, q_ids, cq_ids, a_ids in zip(chunk, questions, context_questions, answers):
            keys = ex.sentence_keys()
            mine = slice(offset, offset + len(keys))
            offset += len(keys)
            pieces = sentence_ids[mine]
            support_set = set(ex.supporting_facts)
            answer_span = []
            for key, text, offsets in zip(keys, sentences[mine], sentence_offsets[mine]):
                answer_span += answer_token_mask(text, offsets, ex.answer) if key in support_set else [0] * len(offsets)
            starts, ends = extraction_targets(keys, sentences[mine], sentence_offsets[mine], support_set, ex.answer)
            lengths = np.array([len(p) for p in pieces], dtype=np.int64)
            paragraph_of = [i for i, p in enumerate(ex.paragraphs) for _ in p.sentences]
            columns["id"].append(ex.id)
            columns["question_ids"].append(q_ids)
            columns["context_question_ids"].append(cq_ids)
            columns["labels"].append(a_ids if ex.answer is not None else [])
            columns["context_ids"].append([t for p in pieces for t in p])
            columns["sentence_index"].append(np.repeat(np.arange(len(keys)), lengths).tolist())
            columns["support"].append(np.repeat([int(k in support_set) for k in keys], lengths).astype(int).tolist())
            columns["answer_span"].append(answer_span)
            columns["sentence_paragraph"].append(paragraph_of)
            columns["token_start"].append([start for offsets in sentence_offsets[mine] for start, _ in offsets])
            columns["token_end"].append([end for offsets in sentence_offsets[mine] for _, end in offsets])
            columns["answer_start"].append(starts)
            columns["answer_end"].append(ends)
            columns["answer_type"].append(answer_type(ex.answer))
            if spec.lexical:
                # a title's tokens end where its text does, before the ": " that format_sentence adds
                title_lengths = [sum(end <= len(title) for _, end in offsets)
                                 for (title, _), offsets in zip(keys, sentence_offsets[mine])]
                columns["sentence_lexical"].append(lexical_features(pieces, title_lengths, paragraph_of, cq_ids))
                columns["paragraph_links"].append(paragraph_links(pieces, title_lengths, paragraph_of))
    return columns


def extraction_targets(keys, texts, offsets, support: set, answer: str | None) -> tuple[list[int], list[int]]:
    """`answer_boundaries` over a whole context: the occurrences inside supporting sentences, or every occurrence
    where those hold none (the answer stated elsewhere)."""
    per_sentence = [answer_boundaries(text, marks, answer) for text, marks in zip(texts, offsets)]
    in_support = [key in support for key in keys]
    if not any(any(s) for (s, _), kept in zip(per_sentence, in_support) if kept):
        in_support = [True] * len(keys)
    starts = [flag * kept for (s, _), kept in zip(per_sentence, in_support) for flag in s]
    ends = [flag * kept for (_, e), kept in zip(per_sentence, in_support) for flag in e]
    return starts, ends


def tokenizer_fingerprint(tokenizer) -> str:
    """Identifies a tokenizer by what it does (its full serialisation), not by where it was loaded from."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def examples_fingerprint(examples: list[Example]) -> str:
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(repr(ex).encode())
    return digest.hexdigest()[:16]


def load_features(
    examples: list[Example],
    spec: FeatureSpec,
    *,
    question_tokenizer,
    context_tokenizer,
    cache_dir: str | Path | None,
    progress: bool = True,
) -> datasets.Dataset:
    """`encode_examples` as a `datasets.Dataset`, read from `cache_dir` when the same data, tokenizers and
    spec were encoded before. Rows come back as Python lists; the collators only pad."""
    key = hashlib.sha256(json.dumps([
        FEATURE_VERSION, examples_fingerprint(examples), tokenizer_fingerprint(question_tokenizer),
        tokenizer_fingerprint(context_tokenizer), spec.to_dict(),
    ]).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"features-{key}" if cache_dir else None
    if path is not None and path.exists():
        try:
            features = datasets.load_from_disk(str(path))
            log.info("features from cache %s", path)
            return features
        except (OSError, ValueError) as err:  # a missing or cut file; pyarrow's ArrowInvalid is a ValueError
            log.warning("feature cache %s is unreadable (%s: %s): rebuilt", path, type(err).__name__, err)
            discard(path)
    columns = encode_examples(examples, spec, question_tokenizer=question_tokenizer,
                              context_tokenizer=context_tokenizer, progress=progress)
    features = datasets.Dataset.from_dict(columns)
    if path is not None:
        # several processes may build the same entry: each writes its own copy, the first renamed in place wins
        tmp = temp_path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_dead_temps(path.parent)
            features.save_to_disk(str(tmp))
            publish_or_adopt(tmp, path)
        except OSError as err:  # a full disk: go on with the features in memory
            discard(tmp)
            log.warning("feature cache: cannot write %s (%s): features kept in memory", path, err)
            return features
        features = datasets.load_from_disk(str(path))
    return features
