"""Build what a run needs from its config: the reader (from Hub ids, folders or the embedded models) and the
tokenized splits."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..atomic import discard, publish_or_adopt, remove_dead_temps, temp_path
from ..config import ConfigError, DataConfig, TokenLimits
from ..data.features import load_features
from ..data.sources import load_examples
from ..readers.base import Reader
from ..readers.loading import READERS, load_reader_folder
from ..resources import SAMPLE_PATH
from .config import SECTIONS, ModelConfig, RunConfig


def resolve_model(name: str, cache_dir: str, part: str) -> str:
    """`tiny` → the embedded tiny model (built once into the cache), `minilm` → the PyPI-installed encoder,
    anything else → a Hub id or folder, passed on unchanged."""
    if name == "minilm":
        from ..assets import pretrained_encoder_path

        return str(pretrained_encoder_path())
    if name == "tiny":
        from ..assets import build_tiny_models

        folder = Path(cache_dir) / "tiny-models"
        if not _complete(folder):  # built whole under a temporary name, then renamed
            if folder.exists() and not _complete(folder):  # cut short by a kill in an earlier version
                discard(folder)
            folder.parent.mkdir(parents=True, exist_ok=True)
            remove_dead_temps(folder.parent)
            tmp = temp_path(folder)
            try:
                build_tiny_models(tmp, load_examples(str(SAMPLE_PATH))[0])
                publish_or_adopt(tmp, folder)  # another process may have published the same models first
            finally:
                discard(tmp)
        return str(folder / part)
    return name


def _complete(folder: Path) -> bool:
    return all((folder / name / "config.json").is_file() and (folder / name / "config.json").stat().st_size > 0
               for name in ("t5", "encoder"))


def token_limits(data: DataConfig) -> TokenLimits:
    return TokenLimits(data.max_question_tokens, data.max_answer_tokens)


def build_reader(config: RunConfig) -> Reader:
    """The reader of `config.model` with the settings of its section, fed with `config.data`'s token limits."""
    if config.model.init_from:
        return reader_from_folder(config)
    model, kind = config.model, READERS[config.model.kind][0]
    parts = [resolve_model(getattr(model, part), config.data.cache_dir, part) for part in kind.parts]
    try:
        return kind.build(*parts, config.reader, token_limits(config.data))
    except OSError as err:  # transformers: not on the Hub / not cached offline / no such folder
        raise ConfigError(f"model: cannot load {model.t5!r} / {model.encoder!r}: {str(err).splitlines()[0]}. "
                          "Offline, point model.t5 / model.encoder at local folders, or use 'tiny' / 'minilm'.") from None


def load_split(config: DataConfig, reader: Reader, split: str, accelerator=None):
    """Examples and cached features of the train or validation split, as the reader is fed. Under many processes
    the main process tokenizes first and the others read its cache."""
    source = config.train if split == "train" else config.validation
    limit = config.train_limit if split == "train" else config.validation_limit
    examples, _ = load_examples(source, limit=limit)
    if not examples:
        raise ConfigError(f"data.{split}: {source} holds no examples")

    def features():
        return load_features(examples, reader.features, question_tokenizer=reader.t5_tokenizer,
                             context_tokenizer=reader.context_tokenizer, cache_dir=config.cache_dir,
                             progress=accelerator is None or accelerator.is_local_main_process)

    if accelerator is None:
        return examples, features()
    with accelerator.main_process_first():
        return examples, features()


def reader_from_folder(config: RunConfig) -> Reader:
    """`model.init_from`: the folder's reader with its own settings, fed with the run's token limits. A reader
    setting (or model.t5 / model.encoder) set to something else than its default and than the folder's value
    would be silently ignored, so it is refused by name."""
    model = config.model
    reader = load_reader_folder(model.init_from)
    if reader.kind != model.kind:
        raise ConfigError(f"model.init_from {model.init_from} holds a {reader.kind} reader, "
                          f"but model.kind is {model.kind}")
    defaults, saved = SECTIONS[model.kind](), dataclasses.asdict(reader.config)
    ignored = [f"{model.kind}.{name}" for name, value in dataclasses.asdict(config.reader).items()
               if value != getattr(defaults, name) and value != saved[name]]
    ignored += [f"model.{name}" for name in type(reader).parts if getattr(model, name) != getattr(ModelConfig(), name)]
    if ignored:
        raise ConfigError(f"model.init_from {model.init_from}: the reader is built from the folder's own settings, "
                          f"so {sorted(ignored)} would be ignored; remove them or leave out init_from")
    reader.limits = token_limits(config.data)
    return reader
