"""Load a reader folder of either kind (the format is in `base.py`); weights from safetensors only."""
from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, T5ForConditionalGeneration

from .base import READER_FILE, WEIGHTS_FILE, Reader
from .baseline import BaselineConfig, BaselineReader
from .errors import ReaderFolderError
from .latent import LatentConfig, LatentReader

READERS = {"baseline": (BaselineReader, BaselineConfig), "latent": (LatentReader, LatentConfig)}


def t5_from_config(folder: Path) -> T5ForConditionalGeneration:
    t5 = T5ForConditionalGeneration(AutoConfig.from_pretrained(folder))
    t5.generation_config = t5.generation_config.from_pretrained(folder)
    return t5


def encoder_from_config(folder: Path):
    return AutoModel.from_config(AutoConfig.from_pretrained(folder))


def load_reader(directory: str | Path, device: str | torch.device = "cpu", expected: type = Reader) -> Reader:
    """The reader saved in `directory`, in eval mode on `device`. `expected` (a reader class) refuses the other kind."""
    folder = Path(directory)
    meta_path, weights = folder / READER_FILE, folder / WEIGHTS_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder}: not a reader folder (no {READER_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
        reader_class, config_class = READERS[meta["kind"]]
        config = config_class(**meta["config"])
        sp_rule = meta.get("sp_rule")
        if sp_rule is not None:
            # the paragraph rule came later: a rule saved before it has none
            sp_rule = {"sp_top_k": sp_rule["sp_top_k"], "sp_threshold": sp_rule["sp_threshold"],
                       "sp_paragraphs": sp_rule.get("sp_paragraphs"), "sp_first": bool(sp_rule.get("sp_first"))}
    except (ValueError, KeyError, TypeError) as err:  # bad JSON, unknown kind, fields of another version
        raise ReaderFolderError(f"{meta_path}: not a reader description this version reads ({err}); "
                                "save the reader again with this version") from None
    if not issubclass(reader_class, expected):
        raise ReaderFolderError(f"{folder}: holds a {meta['kind']} reader, not a {expected.__name__}")
    if not weights.exists():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_FILE}")
    t5, t5_tokenizer = t5_from_config(folder / "t5"), AutoTokenizer.from_pretrained(folder / "t5")
    if reader_class is LatentReader:
        reader = LatentReader(t5, t5_tokenizer, encoder_from_config(folder / "encoder"),
                              AutoTokenizer.from_pretrained(folder / "encoder"), config)
    else:
        reader = BaselineReader(t5, t5_tokenizer, config)
    try:
        safetensors.torch.load_model(reader, str(weights), strict=True, device=str(device))
    except (safetensors.SafetensorError, RuntimeError) as err:  # truncated or foreign file, missing tensors
        raise ReaderFolderError(f"{weights}: cannot load the weights ({str(err).splitlines()[0][:300]})") from None
    reader.sp_rule = sp_rule
    return reader.to(device).eval()
