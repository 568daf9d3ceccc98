"""Config machinery and the sections that need nothing of the readers.

Every config is a dataclass whose fields are declared once, with `option(default, help)`, and checked in
`__post_init__` (a `ConfigError` naming the field). `build_section` makes one from plain values (YAML, a saved
reader folder, command-line overrides), converting and checking each value against its field's annotation;
`section_help` lists the fields for `--help`. The readers' own configs (`readers.latent.LatentConfig`,
`readers.baseline.BaselineConfig`) use the same two helpers; the run config that composes them all is
`training.config.RunConfig`. No config ever holds run state (see training.state).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from .resources import SAMPLE_PATH

# Defaults shared by several commands and the Python API, stated once here.
CACHE_DIR = ".cache/latentqa"  # tokenized features and the embedded tiny models
TOP_K = 10  # paragraphs a question reads from an index
COMPRESS_ABOVE = 200_000  # index windows (about 50,000 paragraphs) past which retrieval's vectors are IVF-PQ codes
CACHE_MB = 512  # memory a served reader keeps context states per window in (0: off)
CACHE_FORMATS = ("fp32", "fp16", "int8")  # how the state cache holds states; a projected format is an index's alone


class ConfigError(ValueError):
    """A config that cannot run; the message names the file or the field."""


def option(default, help: str):
    """A config field: its default and its one help text."""
    return field(default=default, metadata={"help": help})


def at_least(config, minimum, *names: str) -> None:
    """Refuse any of the named fields (None aside) below `minimum`."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")


def build_section(cls, values: dict, *, section: str, where: str):
    """`cls(**values)` with every value checked against its field's annotation (numbers written as strings are
    converted: YAML reads `1e-4` as one) and every error named `where: section.field`."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown} in section {section!r}")
    converted = {name: _coerce(known[name], value, f"{where}: {section}.{name}") for name, value in values.items()}
    try:
        return cls(**converted)
    except ConfigError as err:  # the class's own checks name the bare field
        raise ConfigError(f"{where}: {section}.{err}") from None


def section_help(section: str, cls) -> list[str]:
    """One line per field: `section.name (default ...): help`."""
    return [f"  {section}.{f.name} (default {f.default!r}): {f.metadata.get('help', '')}"
            for f in dataclasses.fields(cls)]


def _coerce(spec: dataclasses.Field, value, name: str):
    annotation = str(spec.type)
    if value is None:
        if "None" in annotation:
            return None
        raise ConfigError(f"{name} cannot be null")
    kind = annotation.split("|")[0].strip()
    try:
        if kind == "tuple[int, ...]":  # YAML and the command line give a list: [4, 8, 16, 32]
            if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or int(v) != v for v in value):
                raise ValueError
            return tuple(int(v) for v in value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if kind == "float":
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise ValueError
            return float(value)
        if isinstance(value, bool):  # YAML 1.1 reads a bare `no` / `off` as false: `mixed_precision: no` means "no"
            return "yes" if value else "no"
        return str(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int written as .inf or 1e400
        raise ConfigError(f"{name} must be {annotation}, got {value!r}") from None


@dataclass(frozen=True)
class TokenLimits:
    """What a reader was trained to read of the question and write of the answer: part of the training data's
    settings (`DataConfig`) and of the feature spec saved with the reader (`data.features.FeatureSpec`)."""

    max_question_tokens: int = option(64, "T5 tokens of `question: {q}` (EOS included); saved with the reader, "
                                          "which predict, eval and serve then use")
    max_answer_tokens: int = option(32, "T5 tokens of the answer (EOS included); saved with the reader")

    def __post_init__(self):
        at_least(self, 2, "max_question_tokens", "max_answer_tokens")


@dataclass(frozen=True)
class DataConfig(TokenLimits):
    train: str = option(str(SAMPLE_PATH), "training data source (see `latentqa data stats --help`)")
    validation: str = option(str(SAMPLE_PATH), "validation data source, evaluated every epoch")
    train_limit: int | None = option(None, "use only the first N training examples (None: all)")
    validation_limit: int | None = option(None, "use only the first N validation examples (None: all)")
    cache_dir: str = option(CACHE_DIR, "where tokenized features (and built tiny models) are cached")

    def __post_init__(self):
        super().__post_init__()
        at_least(self, 1, "train_limit", "validation_limit")


@dataclass
class TrainConfig:
    output_dir: str = option("runs/latent", "run folder: checkpoints, best reader, metrics, config")
    epochs: int = option(3, "passes over the training data")
    max_steps: int | None = option(None, "stop after this many optimizer steps (None: run all epochs)")
    batch_size: int = option(8, "examples per device per micro-batch")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    lr_latent: float = option(1e-4, "learning rate of the selector, projection, gate and evidence heads")
    lr_t5: float = option(1e-5, "learning rate of T5 (the baseline's only group)")
    lr_encoder: float = option(1e-5, "learning rate of the context encoder")
    lr_answer: float = option(5e-5, "learning rate of the extractive answer head (`latent.answer_head: extract`): "
                                    "its live copies of the encoder's top layers and its span and type layers")
    weight_decay: float = option(0.01, "AdamW weight decay")
    warmup_ratio: float = option(0.06, "share of the optimizer steps with linear warm-up, then linear decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: off)")
    freeze_t5_steps: int = option(0, "keep T5 frozen for the first N optimizer steps (warm start)")
    freeze_t5_epochs: int = option(0, "keep T5 frozen for the first N epochs (warm start)")
    mixed_precision: str = option("no", "'no', 'bf16' or 'fp16' (fp16 needs CUDA)")
    gradient_checkpointing: bool = option(True, "recompute activations in backward (encoder, selector, T5)")
    seed: int = option(0, "seed of initialisation, data order and dropout")
    max_nonfinite_steps: int = option(10, "stop after this many consecutive non-finite losses or gradients")
    save_every_steps: int = option(0, "checkpoint every N optimizer steps (0: at epoch ends only)")
    keep_last: int = option(2, "checkpoints kept (the best reader is kept apart)")
    eval_every_steps: int = option(0, "also evaluate every N optimizer steps (0: at epoch ends only)")
    best_metric: str = option("loss", "metric that picks the best reader: loss (lower is better) or em, f1, "
                                      "sp_f1, joint_f1 (higher is better)")
    log_every_steps: int = option(10, "log loss and learning rates every N optimizer steps")
    cpu: bool = option(False, "run on CPU even where a GPU is present (also for torchrun on CPU)")
    freeze_encoder: bool = option(False, "keep the context encoder frozen (no gradient, no dropout): its states can "
                                         "then be cached, unless latent.question_conditioning is 'encoder'")
    state_cache_mb: float = option(4096.0, "memory for cached context states of a frozen, question-free encoder, "
                                           "reused in every later epoch and evaluation (0: off)")
    state_cache_dir: str | None = option(None, "also keep the cached context states on disk here, for later runs "
                                               "(None: memory only)")
    state_cache_states: str = option("fp16", "how cached states are held, in memory and on disk (readers/"
                                             "state_format.py): fp16, int8 (half the bytes, states within about 1%) "
                                             "or fp32 (exact)")

    def __post_init__(self):
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.best_metric not in ("loss", "em", "f1", "sp_f1", "joint_f1"):
            raise ConfigError(f"best_metric must be loss, em, f1, sp_f1 or joint_f1, got {self.best_metric!r}")
        if self.state_cache_states not in CACHE_FORMATS:
            raise ConfigError(f"state_cache_states must be one of {', '.join(CACHE_FORMATS)}, got "
                              f"{self.state_cache_states!r}")
        at_least(self, 0, "state_cache_mb")
        at_least(self, 1, "epochs", "batch_size", "grad_accum", "keep_last", "max_nonfinite_steps", "log_every_steps",
                 "max_steps")


@dataclass
class EvalConfig:
    """How answers are generated: in the evaluation of each epoch, and by predict, eval and serve."""

    batch_size: int = option(16, "examples per device when evaluating")
    num_beams: int = option(1, "beam search width (1: greedy)")
    max_new_tokens: int = option(32, "longest generated answer")
    mask_latents: bool = option(False, "answer with the latents masked out of what the answer reads (T5's decoder or "
                                       "the extractive head): the drop measures what passes the bottleneck (latent "
                                       "reader only)")
    latents: int | None = option(None, "answer from the first K latents only: one of the counts the reader was "
                                       "trained for (latent.nested_latents) (None: all; latent reader only)")
    limit: int | None = option(None, "generate answers for only the first N validation examples during training")

    def __post_init__(self):
        at_least(self, 1, "batch_size", "num_beams", "max_new_tokens", "latents", "limit")


# The supporting-fact rule: how per-sentence scores become supporting facts (`evaluation.facts.select_facts`). A top-k;
# a threshold (the best sentence always); or the best sentence of each of the best N paragraphs, with their first
# sentences if `first` and their other sentences over a threshold if one is set (HotpotQA's facts come from exactly
# 2 paragraphs, at least one from each, very often the first). A reader with sentence scores has its rule chosen on
# validation data by the trainer (`evaluation.sp_rule`) and saved in its folder; predict, eval and serving use it
# unless they are given a rule of their own.
DEFAULT_TOP_K = 2  # with no rule given or saved


@dataclass(frozen=True)
class SpRule:
    top_k: int | None = option(None, "supporting facts per question: the k best-scored sentences (no rule set: the "
                                     "one saved with the reader, else 2)")
    threshold: float | None = option(None, "instead of top-k, every sentence scored at least this (the best one "
                                           "always); with paragraphs, those paragraphs' other sentences scored at "
                                           "least this")
    paragraphs: int | None = option(None, "instead of top-k, the best sentence of each of the N best paragraphs "
                                          "(HotpotQA has 2 gold paragraphs), with threshold also their other "
                                          "sentences scored at least that")
    first: bool = option(False, "with paragraphs, also each chosen paragraph's first sentence (in HotpotQA often a "
                                "supporting fact)")

    def __post_init__(self):
        at_least(self, 1, "top_k", "paragraphs")
        if self.top_k is not None and self.paragraphs is not None:
            raise ConfigError("top_k and paragraphs are two rules: set one")
        if self.first and self.paragraphs is None:
            raise ConfigError("first adds each chosen paragraph's first sentence: it needs paragraphs")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ConfigError(f"threshold is a score in [0, 1], got {self.threshold}")

    @property
    def given(self) -> bool:
        """Does this rule say anything (`first` only refines `paragraphs`)?"""
        return any(value is not None for value in (self.top_k, self.threshold, self.paragraphs))

    def or_saved(self, saved: SpRule | None) -> SpRule:
        """This rule where it says something, else the reader's saved one, else top-2."""
        return self if self.given else saved or SpRule(top_k=DEFAULT_TOP_K)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
