"""Build what a run needs from its config: the reader (from Hub ids, folders or the embedded models) and the
tokenized splits."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import ConfigError, DataConfig, ModelConfig
from ..data.features import load_features
from ..data.sources import load_examples
from ..readers.base import Reader
from ..readers.loading import load_reader
from ..readers.baseline import BaselineConfig, BaselineReader
from ..readers.latent import LatentConfig, LatentReader
from ..resources import SAMPLE_PATH


def resolve_model(name: str, cache_dir: str, part: str) -> str:
    """`tiny` → the embedded tiny model (built once into the cache), `minilm` → the PyPI-installed encoder,
    anything else → a Hub id or folder, passed on unchanged."""
    if name == "minilm":
        from ..assets import pretrained_encoder_path

        return str(pretrained_encoder_path())
    if name == "tiny":
        from ..assets import build_tiny_models

        folder = Path(cache_dir) / "tiny-models"
        if not (folder / part / "config.json").exists():
            build_tiny_models(folder, load_examples(str(SAMPLE_PATH))[0])
        return str(folder / part)
    return name


def build_reader(config: ModelConfig, cache_dir: str) -> Reader:
    if config.init_from:
        return reader_from_folder(config)
    try:  # the readers' own checks, named as the config fields they come from
        settings = BaselineConfig(max_input_tokens=config.max_input_tokens) if config.kind == "baseline" else \
            LatentConfig(num_latents=config.num_latents, selector_layers=config.selector_layers,
                         selector_heads=config.selector_heads, support_loss_weight=config.support_loss_weight,
                         answer_span_loss_weight=config.answer_span_loss_weight,
                         encoder_attention_dropout=config.encoder_attention_dropout, gate_init=config.gate_init,
                         question_conditioning=config.question_conditioning, window_packing=config.window_packing,
                         sp_scorer=config.sp_scorer,
                         sp_scorer_loss_weight=config.sp_scorer_loss_weight, sp_lexical=config.sp_lexical,
                         sp_paragraph_loss_weight=config.sp_paragraph_loss_weight,
                         selector_lexical=config.selector_lexical,
                         selector_lexical_scale=config.selector_lexical_scale, paragraph_ranker=config.paragraph_ranker)
    except ValueError as err:
        raise ConfigError(f"model.{err}") from None
    t5 = resolve_model(config.t5, cache_dir, "t5")
    try:
        if config.kind == "baseline":
            return BaselineReader.build(t5, settings)
        return LatentReader.build(t5, resolve_model(config.encoder, cache_dir, "encoder"), settings)
    except OSError as err:  # transformers: not on the Hub / not cached offline / no such folder
        raise ConfigError(f"model: cannot load {config.t5!r} / {config.encoder!r}: {str(err).splitlines()[0]}. "
                          "Offline, point model.t5 / model.encoder at local folders, or use 'tiny' / 'minilm'.") from None


def load_split(config: DataConfig, reader: Reader, split: str, accelerator=None):
    """Examples and cached features of the train or validation split. Under many processes the main process
    tokenizes first and the others read its cache."""
    source = config.train if split == "train" else config.validation
    limit = config.train_limit if split == "train" else config.validation_limit
    examples, _ = load_examples(source, limit=limit)
    if not examples:
        raise ConfigError(f"data.{split}: {source} holds no examples")

    def features():
        return load_features(examples, question_tokenizer=reader.t5_tokenizer,
                             context_tokenizer=reader.context_tokenizer,
                             max_question_tokens=config.max_question_tokens,
                             max_answer_tokens=config.max_answer_tokens, cache_dir=config.cache_dir,
                             progress=accelerator is None or accelerator.is_local_main_process)

    if accelerator is None:
        return examples, features()
    with accelerator.main_process_first():
        return examples, features()


def reader_from_folder(config: ModelConfig) -> Reader:
    """`model.init_from`: the folder's reader with its own settings. A model field set to something else than its
    default and than the folder's value would be silently ignored, so it is refused by name."""
    reader = load_reader(config.init_from)
    if reader.kind != config.kind:
        raise ConfigError(f"model.init_from {config.init_from} holds a {reader.kind} reader, "
                          f"but model.kind is {config.kind}")
    defaults, saved = ModelConfig(), dataclasses.asdict(reader.config)
    names = ["t5", *(["encoder"] if reader.kind == "latent" else []), *saved]
    ignored = sorted(f"model.{name}" for name in names if getattr(config, name) != getattr(defaults, name)
                     and getattr(config, name) != saved.get(name, getattr(defaults, name)))
    if ignored:
        raise ConfigError(f"model.init_from {config.init_from}: the reader is built from the folder's own settings, "
                          f"so {ignored} would be ignored; remove them or leave out init_from")
    return reader
