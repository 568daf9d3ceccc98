"""Predict a data source with a saved reader: what `latentqa predict` and `latentqa eval` share."""
from __future__ import annotations

from accelerate import Accelerator
from torch.utils.data import DataLoader

from ..config import CACHE_DIR, EvalConfig
from ..data.examples import Example
from ..data.features import load_features
from ..data.sources import load_examples
from ..readers.base import Reader
from ..readers.collate import IndexedRows
from ..readers.facts import SpRule
from ..readers.loading import load_reader
from ..readers.state_cache import ContextStateCache
from .predict import Predictions, predict


def predict_source(model_dir: str, source: str, config: EvalConfig, rule: SpRule = SpRule(), *,
                   limit: int | None = None, cache_dir: str | None = CACHE_DIR,
                   state_cache_dir: str | None = None) -> tuple[Reader, list[Example], object, Predictions]:
    """Load the reader and the data, encode it as the reader was trained (its saved feature spec), answer every
    example; returns (reader, examples, features, predictions). `state_cache_dir`: read (and keep) the context
    states of a reader whose states are question-free there, as training does."""
    accelerator = Accelerator()
    reader = load_reader(model_dir, device=accelerator.device)
    if state_cache_dir and reader.cache_refusal(inference=True) is None:
        reader.use_state_cache(ContextStateCache(max_mb=0, directory=state_cache_dir), inference=True)
    examples, _ = load_examples(source, limit=limit)
    features = load_features(examples, reader.features, question_tokenizer=reader.t5_tokenizer,
                             context_tokenizer=reader.context_tokenizer, cache_dir=cache_dir)
    loader = accelerator.prepare(DataLoader(IndexedRows(features), batch_size=config.batch_size,
                                            collate_fn=reader.collator()))
    return reader, examples, features, predict(reader, loader, examples, accelerator, config, rule)
