"""A cache of context-encoder states per window, for a frozen encoder that reads the context without the question.

Such states are a function of (encoder weights, window token ids) alone, so every later epoch, evaluation or
served request over the same window can reuse them instead of running the encoder again. Keys are content hashes
of both: a window's ids (padding stripped) and a fingerprint of the encoder's config and weights, recomputed only
when a weight tensor was replaced or modified in place (PyTorch counts those in `Tensor._version`), so a changed
encoder never gets the states of the old one. States are kept in an LRU bounded in megabytes, optionally backed by a
folder on disk that later runs read (one safetensors file per window), both in one of the index's stored-state
formats (`state_format`: fp32, fp16 or int8).

The folder is safe to share: entries are written under unique temporary names and renamed (`atomic`), an entry
that cannot be read or has the wrong shape is recomputed and rewritten, and when a write fails (a full disk) the
cache says so once and goes on in memory.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence

from ..atomic import write_file
from ..config import CACHE_FORMATS
from .state_format import StateFormat

log = logging.getLogger(__name__)

ENCODE_CHUNK = 64  # windows per encoder call when filling the cache


def encoder_fingerprint(encoder: nn.Module) -> str:
    """A hash of the encoder's config (activation, norm eps, ...) and every parameter and buffer (names, shapes,
    dtypes, bytes). Not of where it was loaded from: one encoder saved in two reader folders is one encoder."""
    digest = hashlib.sha256()
    config = getattr(encoder, "config", None)
    if config is not None:
        settings = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:20]


def encoder_states(encoder: nn.Module, ids: torch.Tensor, mask: torch.Tensor, layers: tuple[int, ...] = (-1,)):
    """The encoder's states of each of `layers` (indices into its hidden states), side by side: (N, T, H × layers)."""
    if layers == (-1,):
        return encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    hidden = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    return torch.cat([hidden[layer] for layer in layers], dim=-1)



@torch.no_grad()
def encode_windows(encoder: nn.Module, windows: list[torch.Tensor], layers: tuple[int, ...] = (-1,)) -> list[torch.Tensor]:
    """The encoder's hidden states of `layers` (side by side) of each window (1-D ids, no padding): [(L_i, H × layers)]
    on the encoder's device.
    Shortest first, in chunks of `ENCODE_CHUNK` each padded to its own longest, so many one-sentence windows waste
    little on padding. The one place windows are encoded for storing: the state cache and the index."""
    device = next(encoder.parameters()).device
    states: list[torch.Tensor | None] = [None] * len(windows)
    order = sorted(range(len(windows)), key=lambda i: len(windows[i]))
    for start in range(0, len(order), ENCODE_CHUNK):
        chunk = order[start:start + ENCODE_CHUNK]
        ids = torch.zeros(len(chunk), len(windows[chunk[-1]]), dtype=torch.long, device=device)  # (M, longest)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(chunk):
            ids[row, :len(windows[i])] = windows[i]
            mask[row, :len(windows[i])] = 1
        computed = encoder_states(encoder, ids, mask, layers)  # (M, longest, H × layers)
        for row, i in enumerate(chunk):
            states[i] = computed[row, :len(windows[i])]
    return states


def window_key(ids: torch.Tensor) -> str:
    """A window's ids (1-D, no padding) as a content hash."""
    return hashlib.sha256(ids.to(torch.int64).cpu().numpy().tobytes()).hexdigest()[:32]


class ContextStateCache:
    """Encoder states per window, keyed by (encoder weights, window ids); see the module docstring.

    max_mb bounds the states held in memory (least recently used go first); directory, when given, keeps every
    computed window on disk too. states is how they are stored, in memory and on disk (`CACHE_FORMATS`: fp16 halves
    fp32's memory, int8 halves fp16's; fp32 is exact)."""

    def __init__(self, *, max_mb: float, directory: str | Path | None = None, states: str = "fp16"):
        if max_mb < 0:
            raise ValueError(f"state cache size must be >= 0 MB, got {max_mb}")
        if states not in CACHE_FORMATS:
            raise ValueError(f"state cache format must be one of {', '.join(CACHE_FORMATS)}, got {states!r}")
        self.max_bytes = int(max_mb * 2**20)
        self.directory = Path(directory) if directory else None
        self.format = StateFormat(states)
        self.entries: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()  # each window's stored tensors
        self.bytes = 0
        self.hits = self.misses = self.disk_hits = 0
        self._fingerprint: str | None = None
        self._versions: tuple | None = None
        self.writes_to_disk = self.directory is not None

    def fingerprint(self, encoder: nn.Module) -> str:
        """The encoder's fingerprint, recomputed only after a weight was replaced or changed in place."""
        tensors = [*encoder.parameters(), *encoder.buffers()]
        versions = (id(encoder), *((t.data_ptr(), t._version) for t in tensors))
        if versions != self._versions:
            self._fingerprint, self._versions = encoder_fingerprint(encoder), versions
        return self._fingerprint

    def stats(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "disk_hits": self.disk_hits, "entries": len(self.entries),
                "mb": round(self.bytes / 2**20, 1), "max_mb": round(self.max_bytes / 2**20, 1)}

    @torch.no_grad()
    def encode(self, encoder: nn.Module, window_ids: torch.Tensor, window_mask: torch.Tensor,
               layers: tuple[int, ...] = (-1,)) -> torch.Tensor:
        """The encoder's states (of `layers`, side by side) of every window, (W, Lw) → (W, Lw, H × layers) float32,
        from the cache where it holds them; the missing windows go through the encoder together, in one batch."""
        prefix = self.fingerprint(encoder) + ("" if layers == (-1,) else "_" + "_".join(map(str, layers))) + \
            ("" if self.format.name == "fp16" else f"_{self.format.name}")  # formats side by side in one folder
        lengths = window_mask.sum(dim=1).tolist()
        host_ids = window_ids.cpu()  # one transfer, not one per window
        keys = [f"{prefix}-{window_key(ids[:n])}" for ids, n in zip(host_ids, lengths)]
        first = {key: i for i, key in reversed(list(enumerate(keys)))}  # a window repeated in the call: once
        width = encoder.config.hidden_size * len(layers)
        stored = {i: self._get(key, (lengths[i], width), len(layers)) for key, i in first.items()}
        missing = [i for i, tensors in stored.items() if tensors is None]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        computed = encode_windows(encoder, [window_ids[i, :lengths[i]] for i in missing], layers)
        for i, states in zip(missing, computed):
            stored[i] = self.format.pack(states.detach().cpu(), len(layers))
            self._put(keys[i], stored[i])
        found = {i: self.format.unpack(lambda name, start, end: tensors[name][start:end], 0, lengths[i])
                 for i, tensors in stored.items()}
        states = pad_sequence([found[first[key]] for key in keys], batch_first=True)  # (W, max length, H)
        states = F.pad(states, (0, 0, 0, window_ids.shape[1] - states.shape[1]))  # (W, Lw, H); padding is 0
        return states.to(window_ids.device, torch.float32)  # one transfer

    # --- storage ---------------------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        prefix, name = key.split("-", 1)
        return self.directory / prefix / name[:2] / f"{name}.safetensors"

    def _get(self, key: str, shape: tuple[int, int], layers: int) -> dict[str, torch.Tensor] | None:
        tensors = self.entries.get(key)
        if tensors is not None:
            self.entries.move_to_end(key)
            return tensors
        if self.directory is None or not self._path(key).exists():
            return None
        path = self._path(key)
        expected = {name: (dtype, (shape[0], shape[1] if name == "states" else layers))
                    for name, dtype in self.format.stored_tensors().items()}
        try:
            tensors = safetensors.torch.load_file(str(path))
            found = {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()}
            if found != expected:  # another shape, or another format's file (the cache folder was shared)
                raise ValueError(f"tensors {found}, expected {expected}")
        except (safetensors.SafetensorError, OSError, KeyError, ValueError) as err:  # truncated, empty, foreign
            log.warning("state cache: %s is unreadable (%s): recomputed", path, err)
            return None
        self.disk_hits += 1
        self._remember(key, tensors)
        return tensors

    def _put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        tensors = {name: t.contiguous() for name, t in tensors.items()}
        if self.writes_to_disk:
            path = self._path(key)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # not fsynced: an entry a power cut empties is unreadable, found so on read and recomputed
                write_file(path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp)), durable=False)
            except OSError as err:  # a full disk, a read-only folder: keep going in memory
                self.writes_to_disk = False
                log.warning("state cache: cannot write to %s (%s): from now on states are kept in memory only",
                            self.directory, err)
        self._remember(key, tensors)

    def _remember(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        size = _nbytes(tensors)
        if size > self.max_bytes or key in self.entries:
            return
        self.entries[key] = tensors
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.bytes -= _nbytes(old)


def _nbytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())
