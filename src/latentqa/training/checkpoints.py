"""Checkpoint folders: written under a temporary name and renamed, so a kill mid-save leaves the last one whole."""
from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

_STEP = re.compile(r"^step-(\d+)$")
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


def resolve_resume(output_dir: Path, resume: str) -> Path:
    """`latest` or a checkpoint path → the checkpoint folder to load."""
    if resume != "latest":
        path = Path(resume)
        if not (path / "run_state.json").exists() and not any(path.glob("*.safetensors")):
            raise FileNotFoundError(f"{path}: not a checkpoint folder")
        return path
    found = list_checkpoints(output_dir)
    if not found:
        raise FileNotFoundError(f"{output_dir / 'checkpoints'}: no checkpoint to resume from")
    return found[-1]


def publish(tmp: Path, final: Path) -> None:
    """Atomically put a finished folder in place of `final` (replacing an older one)."""
    if final.exists():
        old = final.with_name(final.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def prune(output_dir: Path, keep_last: int) -> None:
    for path in list_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
