"""`latentqa demo`'s settings, each declared once with its help: the command's flags are made from them."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, option

# The many-facts demo's lexical attention bias scale (8 epochs): at 1, half of a question-aware selector's attention
# stayed on the facts not asked for (test EM 0.75, seed 0); at 3, 0.94 / 0.81 (seeds 0 / 1); at 10, 0.98 / 0.90 with
# 95% of the attention on the asked answer (docs/demo.md).
LEXICAL_SCALE = 10.0


@dataclass(frozen=True)
class DemoOptions:
    out_dir: str = option("runs/demo", "task, models, runs, report")
    quick: bool = option(False, "a small task and 1 to 3 epochs: a smoke test, not a result")
    full: bool = option(False, "train the baseline for 12 epochs (default 4, like the latent reader: its validation "
                               "loss stops improving by then)")
    encoder: str = option("tiny", "context encoder: 'tiny' (embedded) or 'minilm' (pretrained, PyPI)")
    facts: int = option(1, "facts per context about different entities, the question naming one (1 to 8). Above 1, "
                           "a latent reader is trained for each latent.question_conditioning (none, latents, "
                           "encoder): a question-blind bottleneck must carry every fact, a question-aware one (with "
                           "the lexical attention bias, latent.selector_lexical, at latent.selector_lexical_scale=10) "
                           "only the asked one; the latent readers train 8 epochs")
    modes: tuple[str, ...] = option((), "with --facts above 1: the latent readers to train, by "
                                        "latent.question_conditioning (none given: none, latents and encoder)")
    lexical_scale: float = option(LEXICAL_SCALE, "with --facts above 1: the question-aware readers' lexical "
                                                 "attention bias scale (latent.selector_lexical_scale; 0: no "
                                                 "lexical features)")
    freeze_encoder: bool = option(False, "keep the context encoder frozen, its states cached where they are "
                                         "question-free (train.freeze_encoder)")
    relevance: bool = option(False, "with --facts above 1: the question-aware readers' selector attention also "
                                    "gets the learned question-sentence relevance (latent.selector_relevance)")
    nested: tuple[int, ...] = option((), "compression as a knob instead: train one latent reader with "
                                         "latent.nested_latents=[K...] (k drawn per step), one reading every k each "
                                         "step, and one reader per k alone; test each at every k it can read; EM "
                                         "against k, plotted (docs/nested.md). With --facts above 1: on the "
                                         "many-facts task, the readers question-aware (latents), with --lexical-scale "
                                         "and --relevance as given, and no every-k reader")
    seed: int = option(0, "seed of the task and of the tiny models' weights (the readers' own new modules and the "
                          "data order use train.seed, 0)")

    def __post_init__(self):
        if self.quick and self.full:
            raise ConfigError("quick and --full: choose one")
        if not 1 <= self.facts <= 8:
            raise ConfigError(f"facts must be between 1 and 8, got {self.facts}")
        from ..readers.latent import CONDITIONING  # here, not at the top: the command's flags are made without torch

        unknown = sorted(set(self.modes) - set(CONDITIONING))
        if unknown:
            raise ConfigError(f"modes must be among {', '.join(CONDITIONING)}, got {', '.join(unknown)}")
        if self.lexical_scale < 0:
            raise ConfigError(f"lexical_scale must be at least 0, got {self.lexical_scale:g}")
        if self.nested and min(self.nested) < 1:
            raise ConfigError(f"nested counts of latents must be at least 1, got {list(self.nested)}")
        if self.nested and (self.modes or self.full):  # the nested demo trains no baseline and one kind of reader
            raise ConfigError(f"{'modes' if self.modes else 'full'}: not with --nested (it trains one kind of latent "
                              "reader and no baseline)")
