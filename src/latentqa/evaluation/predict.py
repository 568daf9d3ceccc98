"""Batched prediction and validation loss, on one process or many (Accelerate gathers without duplicates)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator

from ..config import ConfigError, EvalConfig, SpRule
from ..data.examples import Example
from ..progress import progress_bar
from ..data.features import format_sentence
from ..readers.answer import answer_text
from ..readers.base import Generation
from .facts import select_facts


@dataclass
class Predictions:
    answers: dict[str, str]
    sp: dict[str, list] | None  # None: the reader predicts no supporting facts (baseline)
    sentence_scores: dict[str, list[float]] = field(default_factory=dict)  # per id, one score per sentence
    paragraph_scores: dict[str, list[float]] = field(default_factory=dict)  # per id and sentence, its paragraph's

    @property
    def paragraph_ranking(self) -> dict[str, list[float]]:
        """What ranks the paragraphs: the pair ranker's scores where the reader has one, else the sentence scores
        (a paragraph's best sentence)."""
        return self.paragraph_scores or self.sentence_scores


@torch.no_grad()
def predict(model, loader, examples: list[Example], accelerator: Accelerator, config: EvalConfig,
            rule: SpRule = SpRule(), desc: str = "predict") -> Predictions:
    """Answer every example of `loader` (built over `examples`, in order); every process gets all predictions.
    Supporting facts follow `rule`, or the reader's saved one where `rule` says nothing."""
    reader = accelerator.unwrap_model(model)
    rule = rule.or_saved(reader.sp_rule)
    was_training = reader.training
    reader.eval()
    predictions = Predictions({}, {} if reader.predicts_facts else None)
    for batch in progress_bar(loader, desc=desc, unit="batch", disable=not accelerator.is_local_main_process):
        with accelerator.autocast():
            generation = generate_batch(reader, batch, config)
        sequences = accelerator.pad_across_processes(generation.sequences, dim=1,
                                                     pad_index=reader.t5_tokenizer.pad_token_id)
        scores = [accelerator.pad_across_processes(s, dim=1, pad_index=0.0)
                  for s in (generation.sentence_scores, generation.paragraph_scores) if s is not None]
        spans = () if generation.answer_spans is None else (generation.answer_spans,)
        index, sequences, *scores = accelerator.gather_for_metrics((batch["index"], sequences, *scores, *spans))
        spans = scores.pop() if spans else None
        scores += [None] * (2 - len(scores))
        record_batch(reader, [examples[i] for i in index.tolist()], Generation(sequences, *scores, spans), rule,
                     predictions)
    reader.train(was_training)
    return predictions


def check_generation(reader, config: EvalConfig) -> None:
    """Refuse generation settings the reader cannot follow, in one line naming the setting."""
    if config.mask_latents and not reader.has_latents:
        raise ConfigError(f"mask_latents: the {reader.kind} reader has no latents to mask")
    refusal = reader.latent_refusal(config.latents)
    if refusal:
        raise ConfigError(f"latents: {refusal}")


def generate_batch(reader, batch: dict, config: EvalConfig, latents: torch.Tensor | None = None) -> Generation:
    """One collated batch → answer ids (B, T) and the per-sentence scores (B, S) as float32 (None: the baseline;
    paragraph scores: a reader without a pair ranker). `latents`: a count per example (B,) instead of
    `config.latents` (checked by the caller)."""
    check_generation(reader, config)
    latents = config.latents if latents is None else latents
    options = {**({"mask_latents": True} if config.mask_latents else {}),
               **({"latents": latents} if latents is not None else {})}
    generation = reader.generate(batch, num_beams=config.num_beams, max_new_tokens=config.max_new_tokens, **options)
    as_float = (lambda s: None if s is None else s.float())
    return Generation(generation.sequences, as_float(generation.sentence_scores),
                      as_float(generation.paragraph_scores), generation.answer_spans)


@dataclass
class Answered:
    """One example's prediction: the answer, and for a reader that scores sentences, its scores and facts."""

    answer: str
    sentence_scores: list[float] | None = None  # one per sentence of the example
    paragraph_scores: list[float] | None = None  # per sentence, its paragraph's (a pair ranker's)
    facts: list[list] | None = None  # [[title, sent_id], ...]


def decode_batch(reader, examples: list[Example], generation: Generation, rule: SpRule) -> list[Answered]:
    """A batch's answers decoded and its supporting facts picked by `rule` (a given one); `examples` are the
    batch's, row by row."""
    if generation.answer_spans is not None:  # spans copy the context's own characters
        texts = [answer_text([format_sentence(p.title, s) for p in example.paragraphs for s in p.sentences], span)
                 for example, span in zip(examples, generation.answer_spans.tolist())]
    else:
        texts = reader.t5_tokenizer.batch_decode(generation.sequences, skip_special_tokens=True)
    answered = []
    for row, (example, text) in enumerate(zip(examples, texts)):
        item = Answered(text.strip())
        if generation.sentence_scores is not None:
            count = len(example.sentence_keys())
            item.sentence_scores = generation.sentence_scores[row, :count].tolist()
            if generation.paragraph_scores is not None:
                item.paragraph_scores = generation.paragraph_scores[row, :count].tolist()
            item.facts = select_facts(example, item.sentence_scores, rule, item.paragraph_scores)
        answered.append(item)
    return answered


def record_batch(reader, examples: list[Example], generation: Generation, rule: SpRule,
                 predictions: Predictions) -> None:
    """`decode_batch` into `predictions`, by example id."""
    for example, item in zip(examples, decode_batch(reader, examples, generation, rule)):
        predictions.answers[example.id] = item.answer
        if item.facts is not None:
            predictions.sentence_scores[example.id] = item.sentence_scores
            predictions.sp[example.id] = item.facts
        if item.paragraph_scores is not None:
            predictions.paragraph_scores[example.id] = item.paragraph_scores


@torch.no_grad()
def validation_loss(model, loader, accelerator: Accelerator) -> dict[str, float]:
    """Each loss (and its parts) averaged over examples, on every process. Per-example values are gathered with
    `gather_for_metrics`, which drops the samples Accelerate repeats to even out the last batch across processes;
    a part that no example has (support, on unlabelled data) is left out."""
    model.eval()
    gathered: dict[str, list[torch.Tensor]] = {}
    for batch in loader:
        with accelerator.autocast():
            per_example = model(batch).per_example
        per_example = accelerator.gather_for_metrics({k: v.detach().float() for k, v in per_example.items()})
        for name, values in per_example.items():
            gathered.setdefault(name, []).append(values)
    model.train()
    means = {name: torch.cat(values).nanmean().item() for name, values in gathered.items()}
    return {name: value for name, value in means.items() if not math.isnan(value)}
