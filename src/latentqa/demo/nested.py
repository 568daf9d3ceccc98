"""`latentqa demo --nested 4 8 16 32`: compression as a knob, on the one-fact demo (or the many-facts one).

One latent reader trained with nested latents (`latent.nested_latents`: each step reads the first k latents, k drawn
per step), one trained on every k each step (`latent.nested_training: every`, what it costs), and one reader
trained for each k alone, all with the demo's latent settings otherwise. Every reader is tested on the demo's test
questions at each k it can read: EM, overall and for facts past word piece 512, as a table, JSON and a plot of EM
against k, one line per reader.

With `--facts K` the readers are the many-facts demo's question-aware one (`latent.question_conditioning: latents`,
with the demo's lexical and relevance options) and `every` is not trained: on the one-fact demo it cost 1.7x `draw`
for the same EM (docs/nested.md). A frozen encoder's states are computed once for all the readers (a shared cache).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..atomic import discard  # noqa: E402
from ..evaluation.run import predict_source  # noqa: E402
from ..training.config import RunConfig  # noqa: E402
from ..training.trainer import train  # noqa: E402
from .options import LEXICAL_SCALE  # noqa: E402
from .run import CUT, demo_configs, demo_epochs, prepare_task  # noqa: E402
from .task import ANSWERS  # noqa: E402


def nested_configs(base: RunConfig, out: Path, counts: tuple[int, ...],
                   trainings: tuple[str, ...] = ("draw", "every")) -> dict[str, tuple[RunConfig, tuple]]:
    """Per reader name: its run config and the latent counts it is tested at; a nested reader per mode of
    `trainings` (`latent.nested_training`)."""
    def variant(name: str, **latent) -> RunConfig:
        return dataclasses.replace(base, latent=dataclasses.replace(base.latent, **latent),
                                   train=dataclasses.replace(base.train, output_dir=str(out / name)))

    configs = {f"fixed-{k}": (variant(f"fixed-{k}", num_latents=k), (k,)) for k in counts}
    for mode in trainings:
        configs[f"nested-{mode}"] = (variant(f"nested-{mode}", num_latents=counts[-1], nested_latents=counts,
                                             nested_training=mode), counts)
    return configs


def run_nested_demo(out_dir: str | Path, counts: tuple[int, ...], *, seed: int = 0, quick: bool = False,
                    facts: int = 1, encoder: str = "tiny", freeze_encoder: bool = False,
                    lexical_scale: float = LEXICAL_SCALE, relevance: bool = False) -> dict:
    """Train and test the readers of `nested_configs`; returns the results (also in OUT/results.json). With `facts`
    above 1, on the many-facts task (the other options as `demo_configs` takes them)."""
    start = time.perf_counter()
    out = Path(out_dir)
    counts = tuple(sorted(set(counts)))
    _, files, positions, t5_dir, tiny_encoder = prepare_task(out, seed=seed, quick=quick, facts=facts)
    epochs = demo_epochs(quick, False, facts)["latent"]
    mode = "latents" if facts > 1 else None
    configs = demo_configs(out, files, t5_dir, str(tiny_encoder) if encoder == "tiny" else encoder,
                           {"baseline": 1, "latent": epochs}, (mode,) if mode else (), lexical_scale=lexical_scale,
                           freeze_encoder=freeze_encoder, relevance=relevance)
    base = configs[f"latent-{mode}" if mode else "latent"]
    if freeze_encoder:  # every reader reads the same frozen encoder over the same windows: encode them once
        base = dataclasses.replace(base, train=dataclasses.replace(base.train, state_cache_dir=str(out / "states")))
    trainings = ("draw",) if facts > 1 else ("draw", "every")
    results = {"counts": list(counts), "chance": 1 / len(ANSWERS), "cut": CUT, "epochs": epochs, "facts": facts,
               "encoder": encoder, "question_conditioning": mode, "readers": {}}
    for name, (config, readable) in nested_configs(base, out, counts, trainings).items():
        discard(Path(config.train.output_dir))  # each demo trains anew
        train_start = time.perf_counter()
        run = train(config)
        seconds = time.perf_counter() - train_start
        by_count = {}
        for k in readable:
            _, examples, _, predictions = predict_source(str(run / "best"), str(files["test"]),
                                                         dataclasses.replace(config.eval, latents=k), config.sp,
                                                         cache_dir=config.data.cache_dir,
                                                         state_cache_dir=config.train.state_cache_dir)
            correct = {ex.id: predictions.answers[ex.id].strip().lower() == ex.answer for ex in examples}
            past = [correct[ex.id] for ex in examples if positions[ex.id] >= CUT]
            by_count[str(k)] = {"em": sum(correct.values()) / len(correct),
                                "em_past_cut": sum(past) / len(past) if past else None, "n_past_cut": len(past)}
        results["readers"][name] = {"train_seconds": seconds, "by_latents": by_count}
    results["seconds"] = time.perf_counter() - start
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot_em_by_latents(results, out / "em_by_latents.png")
    return results


def format_nested_table(results: dict) -> str:
    counts = results["counts"]
    first = next(iter(results["readers"].values()))["by_latents"]
    n_past = next(iter(first.values()))["n_past_cut"]
    lines = [f"EM (EM past word piece {results['cut']}, n={n_past}) by the number of latents read",
             f"{'reader':<14}" + "".join(f"{'k=' + str(k):>14}" for k in counts) + f"{'train s':>9}"]
    for name, r in results["readers"].items():
        cells = [r["by_latents"].get(str(k)) for k in counts]
        lines.append(f"{name:<14}" + "".join(
            f"{'-':>14}" if c is None else f"{c['em']:>7.3f} ({c['em_past_cut'] or 0:.3f})" for c in cells)
            + f"{r['train_seconds']:>9.0f}")
    task = f"{results['facts']} facts per context, " if results["facts"] > 1 else ""
    lines.append(f"chance {results['chance']:.3f}; {task}{results['epochs']} epochs each; "
                 f"{results['seconds']:.0f} s in all")
    return "\n".join(lines)


def plot_em_by_latents(results: dict, path: Path) -> Path:
    counts = results["counts"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    fixed = [results["readers"][f"fixed-{k}"]["by_latents"][str(k)]["em_past_cut"] for k in counts]
    ax.plot(counts, fixed, "o-", label="a reader trained per k")
    for name in ("nested-draw", "nested-every"):
        if name not in results["readers"]:
            continue
        by = results["readers"][name]["by_latents"]
        ax.plot(counts, [by[str(k)]["em_past_cut"] for k in counts], "s--", label=f"one reader, {name}")
    ax.axhline(results["chance"], color="grey", ls=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(k) for k in counts])
    ax.set_xlabel("latents read (k)")
    ax.set_ylabel(f"EM, fact past word piece {results['cut']}")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
