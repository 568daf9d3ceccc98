"""Prediction files in the official format: {"answer": {id: text}, "sp": {id: [[title, sent_id], ...]}}."""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text
from ..data.examples import DataError


def write_predictions(path: str | Path, answers: dict[str, str], sp: dict[str, list] | None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"answer": answers, **({"sp": sp} if sp is not None else {})}
    write_text(path, json.dumps(payload, indent=1, ensure_ascii=False))
    return path


def read_predictions(path: str | Path, gold_ids: list[str]) -> tuple[dict[str, str], dict[str, list] | None]:
    """Answers and supporting facts (None when the file has no `sp`); errors name the file and first bad id."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON prediction file ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("answer"), dict):
        raise DataError(f'{path}: expected {{"answer": {{id: text}}, "sp": {{id: [[title, sent_id], ...]}}}}')
    answers, sp = payload["answer"], payload.get("sp")
    for key, value in answers.items():
        if not isinstance(value, str):
            raise DataError(f"{path}: answer of id {key} is {type(value).__name__}, not a string")
    if sp is not None:
        if not isinstance(sp, dict):
            raise DataError(f'{path}: "sp" must map ids to [[title, sent_id], ...]')
        for key, facts in sp.items():
            if not isinstance(facts, list) or not all(
                    isinstance(f, list) and len(f) == 2 and isinstance(f[0], str) and isinstance(f[1], int)
                    for f in facts):
                raise DataError(f"{path}: supporting facts of id {key} are not a list of [title, sent_id]")
    known = set(gold_ids)
    for key in [*answers, *(sp or {})]:
        if key not in known:
            raise DataError(f"{path}: id {key} is not in the gold data")
    return answers, sp
