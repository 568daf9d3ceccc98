"""Predict a data source with a saved reader (`latentqa predict`), and evaluate it into a report (`latentqa eval`)."""
from __future__ import annotations

import json
from pathlib import Path

from accelerate import Accelerator
from torch.utils.data import DataLoader

from ..atomic import write_text
from ..config import CACHE_DIR, EvalConfig, SpRule
from ..data.examples import DataError, Example
from ..data.features import load_features
from ..data.sources import load_examples
from ..readers.base import Reader
from ..data.collate import IndexedRows
from ..readers.loading import load_reader_folder
from ..readers.state_cache import ContextStateCache
from .evidence import evidence_table
from .metrics import score
from .predict import Predictions, predict
from .predictions import write_predictions
from .retrieval import paragraph_recall


def predict_source(model_dir: str, source: str, config: EvalConfig, rule: SpRule = SpRule(), *,
                   limit: int | None = None, cache_dir: str | None = CACHE_DIR,
                   state_cache_dir: str | None = None) -> tuple[Reader, list[Example], object, Predictions]:
    """Load the reader and the data, encode it as the reader was trained (its saved feature spec), answer every
    example; returns (reader, examples, features, predictions). `state_cache_dir`: read (and keep) the context
    states of a reader whose states are question-free there, as training does."""
    accelerator = Accelerator()
    reader = load_reader_folder(model_dir, device=accelerator.device)
    if state_cache_dir and reader.cache_refusal(inference=True) is None:
        reader.use_state_cache(ContextStateCache(max_mb=0, directory=state_cache_dir), inference=True)
    examples, _ = load_examples(source, limit=limit)
    features = load_features(examples, reader.features, question_tokenizer=reader.t5_tokenizer,
                             context_tokenizer=reader.context_tokenizer, cache_dir=cache_dir)
    loader = accelerator.prepare(DataLoader(IndexedRows(features), batch_size=config.batch_size,
                                            collate_fn=reader.collator()))
    return reader, examples, features, predict(reader, loader, examples, accelerator, config, rule)


def latents_read(reader: Reader, config: EvalConfig) -> int | None:
    """How many latents the answers read: the count asked for, else all of them; 0 masked; None without latents."""
    if not reader.has_latents:
        return None
    return 0 if config.mask_latents else config.latents or max(reader.latent_counts)


def evaluate_source(model_dir: str, source: str, out_dir: Path, config: EvalConfig, rule: SpRule = SpRule(), *,
                    limit: int | None = None, cache_dir: str | None = CACHE_DIR, state_cache_dir: str | None = None,
                    evidence: bool = False) -> tuple[dict, Path]:
    """`latentqa eval`: predictions, the official metrics, answer scores by group, plots and report.md in
    `out_dir`; returns (metrics, the report's path). `evidence`: also the selector's attention per sentence."""
    from . import report

    out_dir.mkdir(parents=True, exist_ok=True)
    reader, examples, features, predictions = predict_source(model_dir, source, config, rule, limit=limit,
                                                             cache_dir=cache_dir, state_cache_dir=state_cache_dir)
    write_predictions(out_dir / "predictions.json", predictions.answers, predictions.sp)
    unlabelled = sum(ex.answer is None for ex in examples)
    if unlabelled:
        raise DataError(f"{source}: {unlabelled} unlabelled example(s); predictions written to "
                        f"{out_dir / 'predictions.json'}, but a report needs labelled data")
    metrics = {"reader": reader.kind, "model": str(model_dir), "latents": latents_read(reader, config),
               **score(examples, predictions.answers, predictions.sp)}
    if predictions.sentence_scores:
        metrics["paragraph_recall"] = paragraph_recall(examples, predictions.paragraph_ranking)
    if evidence and reader.predicts_facts:
        loader = DataLoader(IndexedRows(features), batch_size=config.batch_size, collate_fn=reader.collator())
        metrics["evidence"] = evidence_table(reader, loader, examples)
    groups = report.breakdown(examples, features, predictions.answers, predictions.sp)
    plots = [report.plot_breakdown(groups, out_dir / "answers_by_group.png", f"{reader.kind} reader: answer scores")]
    if predictions.sentence_scores:
        plots.append(report.plot_sentence_attention(examples, predictions.sentence_scores, out_dir / "attention.png"))
    curves = report.plot_training_curves(Path(model_dir).resolve().parent / "metrics.jsonl", out_dir / "training.png")
    plots += [curves] if curves else []
    write_text(out_dir / "metrics.json", json.dumps({**metrics, "groups": groups}, indent=2))  # `compare` reads it
    path = report.write_report(out_dir, model_dir=model_dir, source=source, metrics=metrics, groups=groups,
                               plots=plots)
    return metrics, path
