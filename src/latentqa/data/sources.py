"""Read HotpotQA from the official JSON files, the Hub, or local parquet / snapshot folders.

A *source* is one string, so every command takes the same `--data`:
  - `path/to/file.json`                  official HotpotQA JSON (`_id`, `[[title, sent_id]]`, `[[title, [sents]]]`)
  - `path/to/file.parquet`               one parquet file in the Hub's schema
  - `path/to/folder[:CONFIG/SPLIT]`      a local Hub snapshot (README with `configs:`) or a folder of parquet files
  - `hub:CONFIG/SPLIT[@REVISION]`        `hotpotqa/hotpot_qa` on the Hub, e.g. `hub:distractor/validation@<commit>`
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .examples import DataError, Example, LoadReport, check_example, checked_example

log = logging.getLogger(__name__)

HUB_REPO = "hotpotqa/hotpot_qa"
HUB_CONFIGS = ("distractor", "fullwiki")


def load_examples(source: str, *, limit: int | None = None) -> tuple[list[Example], LoadReport]:
    """Load every example of `source` (the first `limit` if given) and a report of what was warned about."""
    report = LoadReport(source)
    if source.startswith("hub:"):
        rows = _hub_rows(source[len("hub:"):])
        examples = _from_hub_rows(rows, source, report, limit)
    else:
        path_part, _, subset = source.partition(":") if not Path(source).exists() else (source, "", "")
        path = Path(path_part)
        if not path.exists():
            raise DataError(f"{source}: no such file or folder (a source is a .json, .parquet, folder or hub:CONFIG/SPLIT)")
        if path.suffix == ".json":
            examples = _from_json(path, report, limit)
        else:
            examples = _from_hub_rows(_local_rows(path, subset), source, report, limit)
    if not examples:
        raise DataError(f"{source}: holds no examples")
    seen: dict[str, int] = {}
    for position, ex in enumerate(examples):
        if ex.id in seen:
            raise DataError(f"{source}: id {ex.id} appears twice (examples #{seen[ex.id]} and #{position}); "
                            "predictions and scores are keyed by id")
        seen[ex.id] = position
    for line in report.lines():
        log.warning(line)
    return examples, report


# --- official JSON -------------------------------------------------------------------------------------------


def _from_json(path: Path, report: LoadReport, limit: int | None) -> list[Example]:
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: empty file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 (byte {err.start}); HotpotQA files are UTF-8 JSON") from None
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of examples, got {type(records).__name__}")
    records = records[:limit] if limit else records
    return [check_example(_json_example(rec, path, i), report) for i, rec in enumerate(records)]


def _json_example(rec: object, path: Path, position: int) -> Example:
    where = f"{path}: example #{position}"
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
    where += f" (id {rec['_id']})" if "_id" in rec else ""
    for key in ("_id", "question", "context"):
        if key not in rec:
            raise DataError(f"{where}: missing key '{key}'")
    context, facts = rec["context"], rec.get("supporting_facts") or []
    if not isinstance(context, list) or not all(isinstance(p, list) and len(p) == 2 for p in context):
        raise DataError(f"{where}: context must be a list of [title, [sentences]] pairs, got {context!r:.80}")
    return checked_example(where, example_id=rec["_id"], question=rec["question"], titles=[p[0] for p in context],
                           sentences=[p[1] for p in context], facts=facts, answer=rec.get("answer"),
                           kind=rec.get("type"), level=rec.get("level"))


# --- the Hub's schema (Hub, local parquet, local snapshot) ---------------------------------------------------


def _hub_rows(spec: str):
    import datasets  # imported here: `datasets` is slow to import and only these sources need it

    spec, _, revision = spec.partition("@")
    config, _, split = spec.partition("/")
    if config not in HUB_CONFIGS or not split:
        raise DataError(f"hub:{spec}: expected hub:CONFIG/SPLIT[@REVISION] with CONFIG in {HUB_CONFIGS}")
    if not revision:
        log.warning("hub:%s: no @REVISION given; the run is not pinned to a dataset commit", spec)
    try:
        return datasets.load_dataset(HUB_REPO, config, split=split, revision=revision or None)
    except Exception as err:  # the Hub client raises many types; all mean "could not get it"
        offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE")
        hint = "offline mode is on (HF_HUB_OFFLINE)" if offline else "no network or no such split/revision"
        cause = (str(err).strip().splitlines() or [""])[0][:200]
        raise DataError(
            f"hub:{spec}: could not load {HUB_REPO} ({hint}: {type(err).__name__}: {cause}). "
            "Download it once where there is network (`huggingface-cli download --repo-type dataset "
            f"{HUB_REPO} --local-dir DIR`) and pass --data DIR:{config}/{split}."
        ) from None


def _local_rows(path: Path, subset: str):
    import datasets

    try:
        if path.is_file():
            return datasets.load_dataset("parquet", data_files=str(path), split="train")
        if (path / "README.md").exists():  # a Hub snapshot: its README's `configs:` block maps splits to files
            config, _, split = (subset or "distractor/validation").partition("/")
            return datasets.load_dataset(str(path), config, split=split or "validation")
        files = sorted(str(p) for p in path.rglob("*.parquet"))
        if not files:
            raise DataError(f"{path}: folder holds no parquet files and no README.md with `configs:`")
        return datasets.load_dataset("parquet", data_files=files, split="train")
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{path}: could not read as parquet / snapshot: {type(err).__name__}: {err}") from None


def _from_hub_rows(rows, source: str, report: LoadReport, limit: int | None) -> list[Example]:
    missing = {"id", "question", "context"} - set(rows.column_names)
    if missing:
        raise DataError(f"{source}: missing column(s) {sorted(missing)}; expected the Hub schema of {HUB_REPO}")
    n = min(limit, len(rows)) if limit else len(rows)
    examples = []
    for i, row in enumerate(rows.select(range(n)) if n < len(rows) else rows):
        where = f"{source}: row {i} (id {row['id']})"
        context, facts = row["context"] or {}, row.get("supporting_facts") or {}
        titles, sentences = context.get("title") or [], context.get("sentences") or []
        if len(titles) != len(sentences):
            raise DataError(f"{where}: context has {len(titles)} titles but {len(sentences)} sentence lists")
        fact_titles, sent_ids = facts.get("title") or [], facts.get("sent_id") or []
        if len(fact_titles) != len(sent_ids):
            raise DataError(f"{where}: supporting_facts has {len(fact_titles)} titles but {len(sent_ids)} sent_ids")
        example = checked_example(where, example_id=row["id"], question=row["question"], titles=titles,
                                  sentences=sentences, facts=list(zip(fact_titles, sent_ids)),
                                  answer=row.get("answer") or None,  # the fullwiki test split has "" answers
                                  kind=row.get("type") or None, level=row.get("level") or None)
        examples.append(check_example(example, report))
    return examples


def to_hub_rows(examples: list[Example]) -> list[dict]:
    """Examples in the Hub's schema (dict-of-lists `context` and `supporting_facts`), e.g. to write parquet."""
    return [
        {
            "id": ex.id,
            "question": ex.question,
            "answer": ex.answer or "",
            "type": ex.type or "",
            "level": ex.level or "",
            "supporting_facts": {"title": [t for t, _ in ex.supporting_facts], "sent_id": [s for _, s in ex.supporting_facts]},
            "context": {"title": [p.title for p in ex.paragraphs], "sentences": [list(p.sentences) for p in ex.paragraphs]},
        }
        for ex in examples
    ]
