"""The run config `latentqa train` reads: a YAML preset with `section.field=value` overrides, one section per
dataclass. Each section is declared once, where it belongs: the readers' own settings beside the readers
(`latent`, `baseline`), the supporting-fact rule beside it (`sp`), the rest in `config.py`; this module only
composes them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import (ConfigError, DataConfig, EvalConfig, SpRule, TrainConfig, build_section, option,
                      section_help)
from ..readers.baseline import BaselineConfig
from ..readers.latent import LatentConfig
from ..readers.loading import READERS


@dataclass
class ModelConfig:
    """Which reader, and where its pretrained parts come from; its settings are the `latent` or `baseline`
    section."""

    kind: str = option("latent", "reader: 'latent' (whole context through latents) or 'baseline' (truncated T5)")
    t5: str = option("google/flan-t5-base", "T5 Hub id or folder; 'tiny' builds the embedded offline tiny T5")
    encoder: str = option("distilbert-base-uncased", "context encoder Hub id or folder (latent only); 'tiny' builds "
                                                     "the embedded one, 'minilm' is the pretrained all-MiniLM-L6-v2 "
                                                     "installed from PyPI")
    init_from: str | None = option(None, "start from this reader folder (its own settings) instead of the t5 / "
                                         "encoder above")

    def __post_init__(self):
        if self.kind not in READERS:
            raise ConfigError(f"kind must be one of {', '.join(map(repr, READERS))}, got {self.kind!r}")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sp: SpRule = field(default_factory=SpRule)
    """The supporting-fact rule; none set: chosen on validation after each evaluation and saved with the reader."""

    @property
    def reader(self) -> LatentConfig | BaselineConfig:
        """The settings of the reader `model.kind` names."""
        return getattr(self, self.model.kind)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(RunConfig)}


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """A preset (YAML) with `section.field=value` overrides (values parsed as YAML: 3, 1e-4, null, true)."""
    raw: dict = {}
    where = str(path) if path else "defaults"
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{path}: cannot read the config ({err})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected sections {sorted(SECTIONS)}")
    for section, values in raw.items():  # before an override is merged into one
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"{where}: section {section!r} must hold fields (name: value), got {values!r}")
    for item in overrides:
        key, sep, value = item.partition("=")
        section, _, name = key.partition(".")
        if not sep or not name:
            raise ConfigError(f"override {item!r}: expected section.field=value, e.g. train.epochs=1")
        raw[section] = {**(raw.get(section) or {}), name: yaml.safe_load(value)}
    sections = {}
    for section, values in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"{where}: unknown section {section!r} (sections: {sorted(SECTIONS)})")
        values = values or {}
        sections[section] = build_section(SECTIONS[section], values, section=section, where=where)
    return RunConfig(**sections)


def field_help() -> str:
    """Every field with its default and help, for `latentqa train --help`."""
    return "\n".join(line for section, cls in SECTIONS.items() for line in section_help(section, cls))
