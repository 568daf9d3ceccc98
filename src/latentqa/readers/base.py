"""What both readers share: outputs, the interface, and writing the folder format (`loading.py` reads it).

A reader folder:
    reader.json          {"kind": "latent" | "baseline", "config": {...}, "features": {...} (the feature spec it
                         was trained on), "sp_rule": {...} (the supporting-fact rule chosen in training, optional)}
    model.safetensors    all weights (tied T5 embeddings kept tied; never pickled)
    t5/                  T5 config, generation config and tokenizer
    encoder/             context-encoder config and tokenizer (latent reader only)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import safetensors.torch
import torch
from torch import nn
from torch.nn import functional as F
from transformers import T5ForConditionalGeneration

from ..config import SpRule, TokenLimits
from ..data.features import FeatureSpec

READER_FILE = "reader.json"
WEIGHTS_FILE = "model.safetensors"
READER_PATTERNS = (READER_FILE, WEIGHTS_FILE, "t5/*", "encoder/*")  # a reader folder's files: what the Hub sends


@dataclass
class ReaderOutput:
    loss: torch.Tensor  # answer loss + the weighted auxiliary losses
    answer_loss: torch.Tensor
    auxiliary: dict[str, torch.Tensor] = field(default_factory=dict)
    """Each evidence head's loss (unweighted), averaged over the examples it scores; 0 where none has anything."""
    per_example: dict[str, torch.Tensor] = field(default_factory=dict)
    """The same losses for each example, (B,) each (NaN where an example has nothing to score): what validation
    averages, so its figure does not depend on how examples were batched or sharded."""


def answer_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token cross-entropy, two reductions: the batch's mean over all answer tokens (T5's own loss, what
    training minimises) and each example's mean over its own tokens (what validation averages).
    logits (B, T, V), labels (B, T) with -100 → (), (B,)."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")  # (B, T)
    tokens = (labels != -100).sum(dim=1)  # (B,)
    return nll.sum() / tokens.sum().clamp_min(1), nll.sum(dim=1) / tokens.clamp_min(1)


@dataclass
class Generation:
    sequences: torch.Tensor  # (B, T) answer ids
    sentence_scores: torch.Tensor | None = None  # (B, S) per-sentence score, latent reader only
    paragraph_scores: torch.Tensor | None = None  # (B, S) each sentence's paragraph's score, with a pair ranker only
    answer_spans: torch.Tensor | None = None  # (B, 4) an extractive head's answers (`answer.ExtractiveAnswerHead.decode`)


class Reader(nn.Module):
    """Interface of both readers: forward(batch) → ReaderOutput; generate(batch) → Generation; a collator;
    parameter groups for the optimizer; save_pretrained as a folder (`loading.load_reader_folder` reads it back).
    `features` says how examples must be encoded for it; `sp_rule` is the supporting-fact rule chosen in training."""

    kind: str
    parts = ("t5",)  # the pretrained models it is built from (`build` takes their Hub ids or folders in this order)
    predicts_facts = False  # does `generate` score sentences?
    has_latents = False  # does `generate` take `mask_latents` and `latents`?

    def __init__(self, t5: T5ForConditionalGeneration, t5_tokenizer, config, limits: TokenLimits = TokenLimits()):
        super().__init__()
        self.t5 = t5
        self.t5_tokenizer = t5_tokenizer
        self.config = config
        self.limits = limits
        self.sp_rule: SpRule | None = None

    @property
    def features(self) -> FeatureSpec:
        """How examples are encoded for this reader: its token limits, and lexical evidence if a part reads it."""
        return FeatureSpec(self.limits.max_question_tokens, self.limits.max_answer_tokens,
                           lexical=self.reads_lexical_evidence)

    @property
    def heads(self) -> list:
        """The evidence heads (`readers.heads`) that score sentences as supporting facts: none here."""
        return []

    @property
    def reads_lexical_evidence(self) -> bool:
        return any(head.reads_lexical for head in self.heads)

    @property
    def context_tokenizer(self):
        return self.t5_tokenizer

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"t5": list(self.t5.parameters())}

    def cache_refusal(self, inference: bool = False) -> str | None:
        """Why context states cannot be cached (None: they can); see `LatentReader`."""
        return f"the {self.kind} reader has no context encoder"

    def latent_refusal(self, count: int | None) -> str | None:
        """Why this reader cannot answer from `count` latents (None: it can; a count of None reads them all)."""
        return None if count is None else f"the {self.kind} reader has no latents"

    def index_refusal(self) -> str | None:
        """Why this reader's context states cannot be stored per paragraph in an index (None: they can)."""
        return f"the {self.kind} reader has no context encoder"

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        set_activation_checkpointing(self.t5, enabled)

    # --- folders ---------------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """The reader as a folder. `state_dict`: the weights gathered from a sharded copy of this reader
        (`accelerator.get_state_dict` under FSDP or DeepSpeed), written instead of this module's own."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"kind": self.kind, "config": asdict(self.config), "features": self.features.to_dict(),
                **({"sp_rule": self.sp_rule.to_dict()} if self.sp_rule else {})}
        (out / READER_FILE).write_text(json.dumps(meta, indent=2))
        if state_dict is None:
            safetensors.torch.save_model(self, str(out / WEIGHTS_FILE))
        else:
            safetensors.torch.save_file(self._own_tensors(state_dict), str(out / WEIGHTS_FILE), metadata={"format": "pt"})
        self.t5.config.save_pretrained(out / "t5")
        self.t5.generation_config.save_pretrained(out / "t5")
        self.t5_tokenizer.save_pretrained(out / "t5")
        self._save_parts(out)
        return out

    def _save_parts(self, out: Path) -> None:
        """Anything beyond T5 (the latent reader's encoder)."""

    def _own_tensors(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Standalone CPU copies (DeepSpeed's tensors are views of one flat buffer, which safetensors refuses),
        a tied parameter once, under the name this module lists it by, as `save_model` writes it."""
        names = {name for name, _ in self.named_parameters()} | {name for name, _ in self.named_buffers()}
        return {name: tensor.detach().cpu().contiguous().clone() for name, tensor in state_dict.items()
                if name in names}


def set_activation_checkpointing(model, enabled: bool) -> None:
    """Recompute a pretrained model's layer activations in backward instead of keeping them. transformers 5.x
    renamed the switch (`gradient_checkpointing_*`, still in 5.17, warns in later 5.x): either way non-reentrant."""
    if hasattr(model, "activation_checkpointing_enable"):
        if enabled:
            model.activation_checkpointing_enable()
        else:
            model.activation_checkpointing_disable()
    elif enabled:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
