"""Run configuration: dataclasses (one help text per field, checked on creation), read from YAML presets with
`section.field=value` overrides from the command line. The config never holds run state (see training.state)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .resources import SAMPLE_PATH


class ConfigError(ValueError):
    """A config that cannot run; the message names the file or the field."""


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass
class DataConfig:
    train: str = _help("training data source (see `latentqa data stats --help`)", str(SAMPLE_PATH))
    validation: str = _help("validation data source, evaluated every epoch", str(SAMPLE_PATH))
    train_limit: int | None = _help("use only the first N training examples (None: all)", None)
    validation_limit: int | None = _help("use only the first N validation examples (None: all)", None)
    max_question_tokens: int = _help("T5 tokens of `question: {q}` (EOS included)", 64)
    max_answer_tokens: int = _help("T5 tokens of the answer (EOS included)", 32)
    cache_dir: str = _help("where tokenized features (and built tiny models) are cached", ".cache/latentqa")

    def __post_init__(self):
        if self.max_question_tokens < 2 or self.max_answer_tokens < 2:
            raise ConfigError("data.max_question_tokens and data.max_answer_tokens must be at least 2")


@dataclass
class ModelConfig:
    kind: str = _help("reader: 'latent' (whole context through latents) or 'baseline' (truncated T5)", "latent")
    t5: str = _help("T5 Hub id or folder; 'tiny' builds the embedded offline tiny T5", "google/flan-t5-base")
    encoder: str = _help("context encoder Hub id or folder (latent only); 'tiny' builds the embedded one, "
                         "'minilm' is the pretrained all-MiniLM-L6-v2 installed from PyPI", "distilbert-base-uncased")
    num_latents: int = _help("learned latents of the selector", 32)
    selector_layers: int = _help("cross-attention blocks of the selector", 2)
    selector_heads: int = _help("heads per selector block (must divide the encoder width)", 8)
    support_loss_weight: float = _help("weight of the supporting-fact attention loss", 1.0)
    answer_span_loss_weight: float = _help(
        "weight of the answer-span attention loss: -log(attention mass on the answer's words inside the supporting "
        "sentences); teaches the selector which words to read (0: off)", 0.0)
    encoder_attention_dropout: float | None = _help(
        "dropout on the context encoder's attention probabilities (None: the checkpoint's own); 0 keeps the fused "
        "attention kernels: on CPU a latent training step at 2,048 tokens takes 20% less time", 0.0)
    gate_init: float = _help("initial value of the latent gate (0: the latents start silent, as in Flamingo)", 0.0)
    question_conditioning: str = _help(
        "where the question enters the context path (latent only): 'none' (question-blind latents), 'latents' (the "
        "latents cross-attend to the question; context states stay question-free and cacheable) or 'encoder' (every "
        "encoder window reads [CLS] question [SEP] context [SEP])", "none")
    window_packing: str = _help("how the context fills encoder windows (latent only): 'greedy' (whole paragraphs up "
                                "to the window size), 'paragraph' or 'sentence' (one per window)", "greedy")
    sp_scorer: str = _help("supporting-fact scores (latent only): 'attention' (the selector's attention mass per "
                           "sentence) or 'classifier' (a trained sentence scorer over the context states)", "attention")
    sp_scorer_loss_weight: float = _help("weight of the sentence scorer's binary cross-entropy", 1.0)
    sp_paragraph_loss_weight: float = _help(
        "weight of a binary cross-entropy of each paragraph's best sentence logit against whether it holds a "
        "supporting fact: trains the ranking the paragraph rule uses (sp_scorer 'classifier'; 0: off)", 0.0)
    sp_lexical: bool = _help("give the sentence scorer each sentence's lexical evidence: question words it and its "
                             "paragraph hold, title matches, links between paragraphs (needs sp_scorer 'classifier' "
                             "and a question-aware mode)", False)
    selector_lexical: bool = _help("bias the selector's attention over each context token by its sentence's lexical "
                                   "evidence (learned per head), so the latents read what names the question (needs "
                                   "a question-aware mode; states stay cacheable)", False)
    selector_lexical_scale: float = _help("multiplies the lexical attention bias (needs selector_lexical): its few "
                                          "weights then move that much faster under Adam; the many-facts demo "
                                          "uses 10", 1.0)
    paragraph_ranker: bool = _help("choose the paragraph rule's paragraphs by a paragraph-pair ranker over lexical "
                                   "evidence and title links, fitted on the training data before training (needs a "
                                   "question-aware mode)", False)
    max_input_tokens: int | None = _help("baseline T5 input length (question + context); None: whole context", 512)
    init_from: str | None = _help("start from this reader folder instead of the t5/encoder above", None)

    def __post_init__(self):
        if self.kind not in ("latent", "baseline"):
            raise ConfigError(f"model.kind must be 'latent' or 'baseline', got {self.kind!r}")


@dataclass
class TrainConfig:
    output_dir: str = _help("run folder: checkpoints, best reader, metrics, config", "runs/latent")
    epochs: int = _help("passes over the training data", 3)
    max_steps: int | None = _help("stop after this many optimizer steps (None: run all epochs)", None)
    batch_size: int = _help("examples per device per micro-batch", 8)
    grad_accum: int = _help("micro-batches per optimizer step", 1)
    lr_latent: float = _help("learning rate of the selector, projection and gate", 1e-4)
    lr_t5: float = _help("learning rate of T5 (the baseline's only group)", 1e-5)
    lr_encoder: float = _help("learning rate of the context encoder", 1e-5)
    weight_decay: float = _help("AdamW weight decay", 0.01)
    warmup_ratio: float = _help("share of the optimizer steps with linear warm-up, then linear decay", 0.06)
    max_grad_norm: float = _help("gradient clipping norm (0: off)", 1.0)
    freeze_t5_steps: int = _help("keep T5 frozen for the first N optimizer steps (warm start)", 0)
    freeze_t5_epochs: int = _help("keep T5 frozen for the first N epochs (warm start)", 0)
    mixed_precision: str = _help("'no', 'bf16' or 'fp16' (fp16 needs CUDA)", "no")
    gradient_checkpointing: bool = _help("recompute activations in backward (encoder, selector, T5)", True)
    seed: int = _help("seed of initialisation, data order and dropout", 0)
    max_nonfinite_steps: int = _help("stop after this many consecutive non-finite losses or gradients", 10)
    save_every_steps: int = _help("checkpoint every N optimizer steps (0: at epoch ends only)", 0)
    keep_last: int = _help("checkpoints kept (the best reader is kept apart)", 2)
    eval_every_steps: int = _help("also evaluate every N optimizer steps (0: at epoch ends only)", 0)
    best_metric: str = _help("metric that picks the best reader: loss (lower is better) or em, f1, sp_f1, "
                             "joint_f1 (higher is better)", "loss")
    log_every_steps: int = _help("log loss and learning rates every N optimizer steps", 10)
    cpu: bool = _help("run on CPU even where a GPU is present (also for torchrun on CPU)", False)
    freeze_encoder: bool = _help("keep the context encoder frozen (no gradient, no dropout): its states can then be "
                                 "cached, unless model.question_conditioning is 'encoder'", False)
    state_cache_mb: float = _help("memory for cached context states of a frozen, question-free encoder, reused in "
                                  "every later epoch and evaluation (0: off)", 4096.0)
    state_cache_dir: str | None = _help("also keep the cached context states on disk here, for later runs "
                                        "(None: memory only)", None)

    def __post_init__(self):
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"train.mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.best_metric not in ("loss", "em", "f1", "sp_f1", "joint_f1"):
            raise ConfigError(f"train.best_metric must be loss, em, f1, sp_f1 or joint_f1, got {self.best_metric!r}")
        if self.state_cache_mb < 0:
            raise ConfigError(f"train.state_cache_mb must be >= 0, got {self.state_cache_mb}")
        for name in ("epochs", "batch_size", "grad_accum", "keep_last", "max_nonfinite_steps", "log_every_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class EvalConfig:
    batch_size: int = _help("examples per device when evaluating", 16)
    num_beams: int = _help("beam search width (1: greedy)", 1)
    max_new_tokens: int = _help("longest generated answer", 32)
    sp_top_k: int | None = _help("supporting facts predicted per question: the k best-scored sentences (None with "
                                 "no sp_threshold: the rule saved with the reader, else 2)", None)
    sp_threshold: float | None = _help("instead of top-k, every sentence whose score (attention mass or scorer "
                                       "probability) is at least this (the best one always); with sp_paragraphs, "
                                       "the other sentences of those paragraphs scored at least this", None)
    sp_paragraphs: int | None = _help("instead of top-k, the best sentence of each of the N best paragraphs (a "
                                      "paragraph scored by its best sentence; HotpotQA has 2 gold paragraphs), and "
                                      "with sp_threshold their other sentences scored at least that", None)
    sp_first: bool = _help("with sp_paragraphs, also each chosen paragraph's first sentence (in HotpotQA it is "
                           "often a supporting fact)", False)
    limit: int | None = _help("generate answers for only the first N validation examples during training", None)

    def __post_init__(self):
        for name in ("batch_size", "num_beams", "max_new_tokens", "sp_top_k", "sp_paragraphs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"eval.{name} must be at least 1, got {getattr(self, name)}")
        if self.sp_top_k is not None and self.sp_paragraphs is not None:
            raise ConfigError("eval.sp_top_k and eval.sp_paragraphs are two rules: set one")
        if self.sp_first and self.sp_paragraphs is None:
            raise ConfigError("eval.sp_first adds each chosen paragraph's first sentence: it needs eval.sp_paragraphs")
        if self.sp_threshold is not None and not 0 <= self.sp_threshold <= 1:
            raise ConfigError(f"eval.sp_threshold is a score in [0, 1], got {self.sp_threshold}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"eval.limit must be at least 1 (or null), got {self.limit}")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


_CLASSES = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


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
            raise ConfigError(f"{path}: expected sections {sorted(_CLASSES)}")
    for item in overrides:
        key, sep, value = item.partition("=")
        section, _, name = key.partition(".")
        if not sep or not name:
            raise ConfigError(f"override {item!r}: expected section.field=value, e.g. train.epochs=1")
        raw.setdefault(section, {})[name] = yaml.safe_load(value)
    sections = {}
    for section, values in raw.items():
        if section not in _CLASSES:
            raise ConfigError(f"{where}: unknown section {section!r} (sections: {sorted(_CLASSES)})")
        known = {f.name for f in dataclasses.fields(_CLASSES[section])}
        unknown = set(values or {}) - known
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)} in section {section!r}")
        values = {name: _coerce(section, name, value, where) for name, value in (values or {}).items()}
        try:
            sections[section] = _CLASSES[section](**values)
        except TypeError as err:
            raise ConfigError(f"{where}: section {section!r}: {err}") from None
    return RunConfig(**sections)


def _coerce(section: str, name: str, value, where: str):
    """Check a value against the field's annotation; numbers written as strings (YAML reads `1e-4` as one) are
    converted."""
    annotation = str(next(f.type for f in dataclasses.fields(_CLASSES[section]) if f.name == name))
    if value is None:
        if "None" in annotation:
            return None
        raise ConfigError(f"{where}: {section}.{name} cannot be null")
    kind = annotation.split("|")[0].strip()
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {section}.{name} must be {annotation}, got {value!r}") from None


def field_help() -> str:
    """Every field with its default and help, for `latentqa train --help`."""
    lines = []
    for section, cls in _CLASSES.items():
        for f in dataclasses.fields(cls):
            lines.append(f"  {section}.{f.name} (default {f.default!r}): {f.metadata.get('help', '')}")
    return "\n".join(lines)
