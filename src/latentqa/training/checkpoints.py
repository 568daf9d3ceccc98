"""Checkpoint folders, published with `atomic.replace_folder`: a kill at any moment leaves every checkpoint that
was complete, and `best/`, whole (`tidy` finishes what it interrupted)."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ..atomic import discard, recover, remove_dead_temps, write_text
from ..config import ConfigError

log = logging.getLogger(__name__)
_STEP = re.compile(r"^step-(\d+)$")
_LEFT = re.compile(r"^(step-\d+)\.(new|old|tmp)$")  # what an interrupted save or replacement leaves
T5_TIED = {"t5.shared.weight", "t5.lm_head.weight", "t5.encoder.embed_tokens.weight", "t5.decoder.embed_tokens.weight"}


class TiedEmbeddingsNote(logging.Filter):
    """Accelerate warns at every checkpoint that it saved one copy of tensors that share memory. For T5's tied
    embeddings that is expected (loading restores the tie; tested), so that warning is dropped; any other is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        names = re.search(r"Removed shared tensor \{(.*?)\}", message)
        return not names or not set(re.findall(r"'([^']+)'", names.group(1))) <= T5_TIED


def drop_tied_embeddings_note() -> None:
    """Install `TiedEmbeddingsNote` on Accelerate's logger (once)."""
    logger = logging.getLogger("accelerate.utils.other")
    if not any(isinstance(f, TiedEmbeddingsNote) for f in logger.filters):
        logger.addFilter(TiedEmbeddingsNote())


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of an interrupted save are ignored)."""
    folder = output_dir / "checkpoints"
    if not folder.exists():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_resume(output_dir: Path, resume: str | None) -> Path | None:
    """`latest` or a checkpoint path → the checkpoint folder to load; None to start from the beginning (no
    `--resume`, or `latest` where a kill came before the first checkpoint). An earlier run's checkpoints are never
    trained over without `--resume`: they would be pruned in the new run's place."""
    if resume is None:
        found = list_checkpoints(output_dir)
        if found:
            raise ConfigError(f"{output_dir}: holds a run with checkpoints up to {found[-1].name}; continue it with "
                              "--resume, or choose another train.output_dir (or delete that one)")
        return None
    if resume != "latest":
        path = Path(resume)
        if (path / "reader.json").exists():
            raise FileNotFoundError(f"{path}: a reader folder, not a checkpoint (no optimizer state); to start from "
                                    f"its weights set model.init_from={path}")
        if not (path / "run_state.json").exists():
            raise FileNotFoundError(f"{path}: not a checkpoint folder (no run_state.json)")
        return path
    found = list_checkpoints(output_dir)
    if not found:
        log.warning("%s: no checkpoint yet (stopped before the first save): starting from the beginning",
                    output_dir / "checkpoints")
        return None
    return found[-1]


def tidy(output_dir: Path) -> None:
    """Before a run reads its folder (main process, nothing being written): finish every replacement a kill
    interrupted (checkpoints, `best/`), and remove unfinished saves and dead writers' temporary folders."""
    folder = output_dir / "checkpoints"
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = _LEFT.match(path.name)
        if match and match[2] == "tmp":
            discard(path)
        elif match:
            recover(folder / match[1])
    recover(output_dir / "best")
    discard(output_dir / "best.tmp")
    for place in (folder, output_dir):
        remove_dead_temps(place)


def prune(output_dir: Path, keep_last: int) -> None:
    for path in list_checkpoints(output_dir)[:-keep_last]:
        discard(path)


def keep_metrics_until(path: Path, step: int, evaluated_step: int | None) -> None:
    """On resume, drop the rows of metrics.jsonl written after the checkpoint (training rows past `step`,
    evaluations past `evaluated_step`, a row cut short by a kill): the resumed run writes them again."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        last = (evaluated_step if evaluated_step is not None else -1) if row.get("kind") == "eval" else step
        if row.get("step", 0) <= last:
            kept.append(line)
    write_text(path, "".join(f"{line}\n" for line in kept))
