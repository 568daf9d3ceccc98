"""`latentqa bench`'s settings, each declared once with its help: the command's flags are made from them."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import COMPRESS_ABOVE, at_least, option
from ..readers.state_format import StateFormat


@dataclass(frozen=True)
class BenchOptions:
    lengths: tuple[int, ...] = option((), "context lengths in tokens (none given: 512 1024 2048 4096; 256 512 with "
                                          "--quick)")
    batch_size: int = option(1, "examples per step")
    repeats: int | None = option(None, "timed rounds (None: 5, 1 with --quick); each times every contender once, in "
                                       "rotating order; median and min-max reported")
    warmup: int = option(1, "untimed runs before timing")
    no_gradient_checkpointing: bool = option(False, "turn off gradient checkpointing (on by default for every "
                                                    "contender, as in training; off, the whole-context baseline at "
                                                    "4,096 tokens needs more than 24 GB)")
    device: str | None = option(None, "cpu or cuda (None: cuda when present)")
    quick: bool = option(False, "small models, short contexts, one repeat: a smoke test")
    modes: bool = option(False, "also time latent.question_conditioning none / latents / encoder and a frozen "
                                "encoder without and with cached context states, relative to none, at 2,048 tokens "
                                "(or the longest length below)")
    latents: tuple[int, ...] = option((), "also time generation from the first K latents of one nested reader "
                                          "(latent.nested_latents), for each K, with a frozen encoder and cached "
                                          "states, relative to the largest K, at 2,048 tokens (or the longest length "
                                          "below)")
    out_dir: str = option("runs/bench", "where bench.json and bench.png go")

    def __post_init__(self):
        at_least(self, 1, "batch_size", "repeats")
        at_least(self, 0, "warmup")
        for name in ("lengths", "latents"):
            if any(value < 1 for value in getattr(self, name)):
                raise ValueError(f"{name} must be at least 1 each, got {list(getattr(self, name))}")

    def run_settings(self) -> dict:
        """`run_bench`'s keyword arguments, the defaults that depend on --quick filled in."""
        return {"lengths": self.lengths or ((256, 512) if self.quick else (512, 1024, 2048, 4096)),
                "batch_size": self.batch_size, "repeats": self.repeats or (1 if self.quick else 5),
                "warmup": self.warmup, "quick": self.quick, "gradient_checkpointing": not self.no_gradient_checkpointing,
                "device": self.device, "modes": self.modes, "latents": tuple(sorted(set(self.latents)))}


@dataclass(frozen=True)
class ScaleOptions:
    sizes: tuple[int, ...] = option((10_000, 100_000, 1_000_000), "synthetic paragraphs of each index built")
    states: str = option("int8", "how the indexes store context states (`latentqa index --states`)")
    queries: int = option(200, "questions timed at batch 1 on each index")
    compress_above: int = option(COMPRESS_ABOVE, "windows past which retrieval holds its vectors compressed")
    encoder_paragraphs: int = option(64, "paragraphs the real encoder (all-MiniLM-L6-v2) encodes to time it")
    grow: float = option(0.01, "then add this share of new paragraphs to each index and time that build: what "
                               "keeping a large index current costs (0: not)")
    keep: bool = option(False, "keep each index and corpus file (by default removed once measured: 10^6 int8 "
                               "paragraphs take about 70 GB)")
    out_dir: str = option("runs/bench-scale", "where bench-scale.json and bench-scale.png go")

    def __post_init__(self):
        at_least(self, 1, "queries", "compress_above")
        at_least(self, 0, "encoder_paragraphs", "grow")
        if not self.sizes or min(self.sizes) < 2:
            raise ValueError(f"sizes must be at least 2 each, got {list(self.sizes)}")
        StateFormat(self.states)  # "states format 'int9' is not one ...": the flag named by its first word
