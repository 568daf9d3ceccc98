"""`latentqa eval` output: metrics.json, report.md and the plots a researcher looks at first."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from ..data.examples import DataError  # noqa: E402
from ..data.stats import support_end  # noqa: E402
from .metrics import score_examples  # noqa: E402

LENGTH_BUCKETS = (0, 512, 1024, 2048, 4096)


def bucket_labels(edges) -> list[str]:
    """`low-high` for each pair of edges, then `last+`, in order."""
    return [f"{low}-{high}" for low, high in zip(edges, edges[1:])] + [f"{edges[-1]}+"]


def bucket_label(value: int, edges=LENGTH_BUCKETS) -> str:
    for label, high in zip(bucket_labels(edges), edges[1:]):
        if value < high:
            return label
    return bucket_labels(edges)[-1]


def answer_place(features_row: dict, cut: int = 512) -> str:
    """Where the answer first occurs in the context: 'yes/no', 'not in context', or whether it starts past
    word piece `cut`."""
    if features_row["answer_type"] > 0:
        return "yes/no"
    starts = [i for i, flag in enumerate(features_row["answer_start"]) if flag]
    if not starts:
        return "not in context"
    return "yes" if starts[0] >= cut else "no"


def breakdown(examples, features, answers, sp: dict[str, list] | None = None) -> dict[str, dict[str, dict]]:
    """Answer EM/F1 (and joint EM/F1 where `sp` is given) grouped by context length, answer past word piece 512,
    support past token 512, question type and level."""
    per_example = {s.id: s for s in score_examples(examples, answers, sp)}
    groups: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for ex, row in zip(examples, features):
        scored = per_example[ex.id]
        s = (*(scored.answer or (0.0, 0.0))[:2], *((scored.joint or (0.0, 0.0))[:2] if sp is not None else ()))
        for by, key in (("context tokens", bucket_label(len(row["context_ids"]))),
                        ("answer past token 512", answer_place(row)),
                        ("support past token 512", "yes" if support_end(row["support"]) > 512 else "no"),
                        ("type", ex.type or "unknown"), ("level", ex.level or "unknown")):
            groups[by][key].append(s)
    names = ("em", "f1", "joint_em", "joint_f1")
    return {by: {key: {"n": len(v), **{name: sum(x[i] for x in v) / len(v) for i, name in enumerate(names[:len(v[0])])}}
                 for key, v in sorted(keys.items())} for by, keys in groups.items()}


def plot_breakdown(groups: dict, path: Path, title: str) -> Path:
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False)
    for ax, (by, keys) in zip(axes[0], groups.items()):
        names = list(keys)
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], [keys[n]["em"] for n in names], width=0.4, label="EM")
        ax.bar([i + 0.2 for i in x], [keys[n]["f1"] for n in names], width=0.4, label="F1")
        ax.set_xticks(list(x), [f"{n}\n(n={keys[n]['n']})" for n in names], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"by {by}", fontsize=10)
    axes[0][0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sentence_attention(examples, sentence_scores: dict[str, list[float]], path: Path, count: int = 3) -> Path:
    """The selector's attention mass per sentence for a few examples, gold supporting sentences in orange."""
    shown = [ex for ex in examples if ex.id in sentence_scores][:count]
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, 2.6 * len(shown)), squeeze=False)
    for ax, ex in zip(axes[:, 0], shown):
        keys, scores = ex.sentence_keys(), sentence_scores[ex.id]
        gold = set(ex.supporting_facts)
        ax.bar(range(len(keys)), scores, color=["tab:orange" if k in gold else "tab:blue" for k in keys])
        starts = [i for i, k in enumerate(keys) if k[1] == 0]
        ax.set_xticks(starts, [keys[i][0][:18] for i in starts], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("attention mass")
        ax.set_title(f"{ex.id}: {ex.question[:90]}", fontsize=9)
    fig.suptitle("Selector attention per sentence (orange: gold supporting facts)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_training_curves(metrics_file: Path, path: Path) -> Path | None:
    """Training loss per logged step, validation loss and EM/F1 per evaluation."""
    if not metrics_file.exists():
        return None
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", alpha=0.7)
    left.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="validation loss")
    left.set_xlabel("optimizer step")
    left.legend()
    for key in ("em", "f1", "sp_f1"):
        if evals and key in evals[0]:
            right.plot([r["step"] for r in evals], [r[key] for r in evals], "o-", label=key)
    right.set_ylim(0, 1)
    right.set_xlabel("optimizer step")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(out_dir: Path, *, model_dir: str, source: str, metrics: dict, groups: dict, plots: list[Path]) -> Path:
    lines = [f"# Evaluation of `{model_dir}`", "", f"Data: `{source}` ({metrics.get('count', 0)} examples)", "",
             "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()
              if v is not None]
    for by, keys in groups.items():
        names = [name for name in ("em", "f1", "joint_em", "joint_f1") if name in next(iter(keys.values()))]
        lines += ["", f"## Scores by {by}", "", "| group | n | " + " | ".join(names) + " |",
                  "| --- " * (len(names) + 2) + "|"]
        lines += [f"| {k} | {v['n']} | " + " | ".join(f"{v[name]:.3f}" for name in names) + " |"
                  for k, v in keys.items()]
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def compare_plot(names: list[str], metrics: list[dict], path: Path, keys=("em", "f1", "sp_f1", "joint_f1")) -> Path:
    keys = [k for k in keys if any(m.get(k) is not None for m in metrics)]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(keys), 3.6))
    width = 0.8 / max(len(names), 1)
    for i, (name, m) in enumerate(zip(names, metrics)):
        ax.bar([j + i * width for j in range(len(keys))], [m.get(k) or 0.0 for k in keys], width=width, label=name)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(keys))], keys)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latents_plot(metrics: list[dict], path: Path, keys=("f1", "sp_f1")) -> Path | None:
    """Quality against the latents read, one line per reader folder (`eval --latents K` of one nested reader, or
    readers trained for one count each); None where fewer than two evaluations say how many latents they read."""
    read = [m for m in metrics if isinstance(m.get("latents"), int)]
    if len(read) < 2:
        return None
    keys = [k for k in keys if any(m.get(k) is not None for m in read)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    models = sorted({m.get("model", "?") for m in read})
    for ax, key in zip(axes[0], keys):
        for model in models:
            points = sorted((m["latents"], m[key]) for m in read
                            if m.get("model", "?") == model and m.get(key) is not None)
            ax.plot([k for k, _ in points], [v for _, v in points], "o-", label=_reader_name(model))
        counts = sorted({m["latents"] for m in read})
        ax.set_xscale("symlog", base=2, linthresh=1)  # 0 (masked), 4, 8, ... evenly apart
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.set_xlabel("latents read")
        ax.set_ylabel(key)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _reader_name(model: str) -> str:
    """runs/NAME/best -> NAME: the run's folder names the reader better than its `best` or `last`."""
    path = Path(model)
    return path.parent.name if path.name in ("best", "last") and path.parent.name else path.name


COMPARED = ("em", "f1", "sp_em", "sp_f1", "joint_em", "joint_f1", "count", "latents")


def read_evaluations(folders: list[str]) -> tuple[list[str], list[dict]]:
    """Each `latentqa eval` folder's name and metrics.json; one DataError naming the file where one is missing or
    not metrics."""
    names, rows = [], []
    for folder in folders:
        path = Path(folder) / "metrics.json"
        if not path.exists():
            raise DataError(f"{folder}: no metrics.json (run `latentqa eval --out-dir {folder}` first)")
        try:
            metrics = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise DataError(f"{path}: cannot read it ({err})") from None
        if not isinstance(metrics, dict):
            raise DataError(f"{path}: expected an object of metrics (em, f1, ...), got {type(metrics).__name__}")
        wrong = [k for k in COMPARED if not isinstance(metrics.get(k), (int, float, type(None)))]
        if wrong:
            raise DataError(f"{path}: {', '.join(wrong)} must be numbers, got {[metrics[k] for k in wrong]}")
        names.append(Path(folder).name)
        rows.append(metrics)
    return names, rows


def format_comparison(names: list[str], rows: list[dict]) -> str:
    """One line per evaluation, one column per metric of `COMPARED` ('-' where it has none)."""
    width = max(12, *map(len, names))
    lines = [f"{'':<{width}} " + " ".join(f"{k:>8}" for k in COMPARED)]
    for name, m in zip(names, rows):
        cells = [f"{m[k]:>8.3f}" if isinstance(m.get(k), float) else f"{m.get(k) if m.get(k) is not None else '-':>8}"
                 for k in COMPARED]
        lines.append(f"{name:<{width}} " + " ".join(cells))
    return "\n".join(lines)
