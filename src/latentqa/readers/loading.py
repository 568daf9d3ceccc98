"""Load a reader folder of either kind (the format is in `base.py`); weights from safetensors only."""
from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, T5ForConditionalGeneration

from ..config import ConfigError, SpRule, TokenLimits, build_section
from .base import READER_FILE, WEIGHTS_FILE, Reader
from .baseline import BaselineConfig, BaselineReader
from .errors import ReaderFolderError
from .latent import LatentConfig, LatentReader

READERS = {"baseline": (BaselineReader, BaselineConfig), "latent": (LatentReader, LatentConfig)}
PART_FILES = ("config.json", "tokenizer.json")  # what save_pretrained writes for each part, fast tokenizers only


def read_part(folder: Path, build):
    """`build(folder)` for one part of a reader folder (t5/, encoder/); a config or tokenizer transformers cannot
    read (invalid JSON, unknown model_type, no tokenizer file) is one ReaderFolderError naming the part."""
    try:
        return build(folder)
    except (OSError, ValueError, KeyError, TypeError) as err:
        missing = [name for name in PART_FILES if not (folder / name).is_file()]
        detail = f"no {', no '.join(missing)}" if missing else \
            f"{type(err).__name__}: {' '.join(str(err).splitlines()[0].split())[:300]}"
        raise ReaderFolderError(f"{folder}: cannot read this part of the reader ({detail}); it must hold the files "
                                "save_pretrained wrote") from None


def t5_from_config(folder: Path) -> T5ForConditionalGeneration:
    t5 = T5ForConditionalGeneration(AutoConfig.from_pretrained(folder))
    t5.generation_config = t5.generation_config.from_pretrained(folder)
    return t5


def encoder_from_config(folder: Path):
    return AutoModel.from_config(AutoConfig.from_pretrained(folder))


def read_description(meta_path: Path) -> tuple[str, object, TokenLimits, SpRule | None]:
    """reader.json → (kind, reader config, token limits, saved rule or None); every field checked as in a run
    config. A folder saved before the token limits were written down was fed with 64 / 32: those it gets."""
    try:
        meta = json.loads(meta_path.read_text())
        reader_class, config_class = READERS[meta["kind"]]
        config = build_section(config_class, meta["config"], section="config", where=str(meta_path))
        features = {name: value for name, value in meta["features"].items() if name != "lexical"}  # the config says
        limits = build_section(TokenLimits, features, section="features", where=str(meta_path))
        rule = meta.get("sp_rule")
        if rule is not None:
            rule = build_section(SpRule, rule, section="sp_rule", where=str(meta_path))
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # bad JSON, unknown kind, other fields
        detail = str(err).removeprefix(f"{meta_path}: ") if isinstance(err, ConfigError) else \
            f"{type(err).__name__}: {err}"
        raise ReaderFolderError(f"{meta_path}: not a reader description this version reads ({detail}); save the "
                                "reader again with this version") from None
    return meta["kind"], config, limits, rule


def load_reader_folder(directory: str | Path, device: str | torch.device = "cpu", expected: type = Reader) -> Reader:
    """The reader saved in `directory`, in eval mode on `device`. `expected` (a reader class) refuses the other kind."""
    folder = Path(directory)
    meta_path, weights = folder / READER_FILE, folder / WEIGHTS_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder}: not a reader folder (no {READER_FILE})")
    kind, config, limits, rule = read_description(meta_path)
    reader_class = READERS[kind][0]
    if not issubclass(reader_class, expected):
        raise ReaderFolderError(f"{folder}: holds a {kind} reader, not a {expected.__name__}")
    if not weights.exists():
        raise FileNotFoundError(f"{folder}: no {WEIGHTS_FILE}")
    t5 = read_part(folder / "t5", t5_from_config)
    t5_tokenizer = read_part(folder / "t5", AutoTokenizer.from_pretrained)
    if reader_class is LatentReader:
        reader = LatentReader(t5, t5_tokenizer, read_part(folder / "encoder", encoder_from_config),
                              read_part(folder / "encoder", AutoTokenizer.from_pretrained), config, limits)
    else:
        reader = BaselineReader(t5, t5_tokenizer, config, limits)
    try:
        safetensors.torch.load_model(reader, str(weights), strict=True, device=str(device))
    except (safetensors.SafetensorError, RuntimeError) as err:  # truncated or foreign file, missing tensors
        detail = " ".join(str(err).split())[:600]  # a state_dict mismatch names its tensors past the first line
        raise ReaderFolderError(f"{weights}: cannot load the weights ({detail})") from None
    reader.sp_rule = rule
    return reader.to(device).eval()
