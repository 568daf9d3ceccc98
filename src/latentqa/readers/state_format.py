"""How context states are stored: the formats an index (`latentqa index --states`) and the state cache hold.

    fp32        the encoder's states as computed, 4 bytes a value (exact)
    fp16        the encoder's states rounded to fp16, 2 bytes a value
    int8        each token's values of each stored layer rounded to 255 levels of their own scale (max |value| / 127,
                kept in fp16): 1 byte a value
    int8-pcaD   the states projected on the D directions of largest variance of the first paragraphs indexed
                (`Projection`, fitted once and kept beside the index), then int8 with one scale a token: D bytes a
                token instead of 2 × the width
    int4-pcaD   as int8-pcaD, but each direction's code first divided by its spread over the fitted states (so
                every direction uses int4's 15 levels alike), then int4 with one scale a token, two a byte: D / 2
                bytes a token, so twice the directions of int8-pcaD for the same bytes

Every format reads back as float32 states of the full width, so a reader never knows which one it reads; what each
costs in quality is measured in docs/index.md. A reader can instead learn from what a projected format keeps
(`StoredStates`, `latent.state_dims`): it then reads every state through that format's round trip, with a
projection of its own that an index of the format stores through.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from ..atomic import write_file

PCA_FORMAT = re.compile(r"int([48])-pca([1-9]\d*)")
FORMATS_HELP = ("fp32, fp16, int8, int8-pcaD (D directions, e.g. int8-pca64) or int4-pcaD (D even, e.g. "
                "int4-pca128: the bytes of int8-pca64)")
FLOATS = {"fp32": torch.float32, "fp16": torch.float16}
INT8_LEVELS = 127
INT4_LEVELS = 7
# a new index's format where none is asked for: the smallest within the quality target on real questions
# (docs/index.md, "Stored states")
DEFAULT_STATES = "int8"


@dataclass(frozen=True)
class Projection:
    """The states' mean and their D directions of largest variance: a state x is stored as (x - mean) @ directionsᵀ
    and read back as codes @ directions + mean."""

    mean: torch.Tensor  # (H,) float32
    directions: torch.Tensor  # (D, H) float32, orthonormal rows
    spread: torch.Tensor | None = None  # (D,) float32: each direction's standard deviation over the fitted states

    @classmethod
    def fit(cls, states: torch.Tensor, dims: int) -> "Projection":
        """From (N, H) states; exact and deterministic: the eigenvectors of their covariance, in float64."""
        if not 0 < dims <= states.shape[1]:
            raise ValueError(f"a projection to {dims} directions needs 1 to {states.shape[1]} (the states' width)")
        x = states.double()
        mean = x.mean(dim=0)
        centred = x - mean
        values, vectors = torch.linalg.eigh(centred.T @ centred / max(len(x) - 1, 1))  # ascending eigenvalues
        kept = values[-dims:].flip(0).clamp_min(0).sqrt()
        spread = kept.clamp_min(max(float(kept[0]), 1e-12) * 1e-6)  # a direction of no variance: no division by 0
        return cls(mean.float(), vectors[:, -dims:].flip(1).T.contiguous().float(), spread.float())

    def project(self, states: torch.Tensor) -> torch.Tensor:
        return (states.float() - self.mean) @ self.directions.T

    def restore(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.float() @ self.directions + self.mean

    def save(self, path: Path) -> None:
        tensors = {"mean": self.mean, "directions": self.directions,
                   **({"spread": self.spread} if self.spread is not None else {})}
        write_file(path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp)))

    @classmethod
    def load(cls, path: Path) -> "Projection":
        tensors = safetensors.torch.load_file(str(path))  # an index of before int4 saved no spread
        return cls(tensors["mean"], tensors["directions"], tensors.get("spread"))


def quantize(values: torch.Tensor, groups: int, levels: int = INT8_LEVELS) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, W) → int8 codes in [-levels, levels] (T, W) and fp16 scales (T, groups): each token's `groups` equal slices
    of W have a scale of their own (the stored layers differ in magnitude)."""
    sliced = values.float().reshape(len(values), groups, -1)
    # rounded to fp16 first, so that reading back uses the scale the codes were made with; an all-zero slice gets
    # fp16's smallest normal number rather than 0
    scales = (sliced.abs().amax(dim=-1) / levels).half().clamp_min(torch.finfo(torch.float16).smallest_normal)
    codes = (sliced / scales.float()[..., None]).round().clamp(-levels, levels).to(torch.int8)
    return codes.reshape(values.shape), scales


def dequantize(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    sliced = codes.float().reshape(len(codes), scales.shape[1], -1)
    return (sliced * scales.float()[..., None]).reshape(codes.shape)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes in [-7, 7], (T, D) with D even → uint8 (T, D / 2): code 2i in the low four bits of byte i, 2i + 1
    in the high four, each stored as code + 8."""
    shifted = (codes + 8).to(torch.uint8)
    return shifted[:, 0::2] | (shifted[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    low, high = (packed & 15).to(torch.int8) - 8, (packed >> 4).to(torch.int8) - 8
    return torch.stack([low, high], dim=-1).reshape(len(packed), -1)


@dataclass(frozen=True)
class StateFormat:
    name: str = "fp16"

    def __post_init__(self):
        if self.name not in (*FLOATS, "int8") and not PCA_FORMAT.fullmatch(self.name):
            raise ValueError(f"states format {self.name!r} is not one latentqa reads: {FORMATS_HELP}")
        if self.int4 and self.dims % 2:
            raise ValueError(f"states format {self.name!r}: int4 stores two directions a byte, so D must be even")

    @property
    def dims(self) -> int | None:
        """The directions of a projected format; None where the states keep their width."""
        match = PCA_FORMAT.fullmatch(self.name)
        return int(match.group(2)) if match else None

    @property
    def int4(self) -> bool:
        return self.name.startswith("int4-")

    def stored_width(self, width: int) -> int:
        """The columns a shard's `states` tensor has for states `width` wide."""
        return width if self.dims is None else self.dims // 2 if self.int4 else self.dims

    def check(self, width: int) -> None:
        if self.dims is not None and self.dims > width:
            raise ValueError(f"states format {self.name}: {self.dims} directions of states {width} wide")

    def pack(self, states: torch.Tensor, groups: int, projection: Projection | None = None) -> dict[str, torch.Tensor]:
        """(T, H) float states, H = `groups` stored layers side by side → the tensors a shard stores."""
        if self.name in FLOATS:
            return {"states": states.to(FLOATS[self.name])}
        if self.int4:
            codes, scales = quantize(projection.project(states) / projection.spread, 1, INT4_LEVELS)
            return {"states": pack_int4(codes), "scales": scales}
        if self.dims is not None:
            states, groups = projection.project(states), 1
        codes, scales = quantize(states, groups)
        return {"states": codes, "scales": scales}

    def unpack(self, read, start: int, end: int, projection: Projection | None = None) -> torch.Tensor:
        """Tokens [start, end) back as (L, H) float32; `read(name, start, end)` gives the rows of a stored tensor."""
        if self.name in FLOATS:
            return read("states", start, end).float()
        if self.int4:
            codes = dequantize(unpack_int4(read("states", start, end)), read("scales", start, end))
            return projection.restore(codes * projection.spread)
        states = dequantize(read("states", start, end), read("scales", start, end))
        return states if self.dims is None else projection.restore(states)

    def round_trip(self, states: torch.Tensor, groups: int, projection: Projection | None = None) -> torch.Tensor:
        """(T, H) states as they read back once stored in this format."""
        packed = self.pack(states, groups, projection)
        return self.unpack(lambda name, start, end: packed[name][start:end], 0, len(states), projection)

    def stored_tensors(self) -> dict[str, torch.dtype]:
        """The tensors of tokens this format stores, with their dtypes."""
        if self.name in FLOATS:
            return {"states": FLOATS[self.name]}
        return {"states": torch.uint8 if self.int4 else torch.int8, "scales": torch.float16}


class StoredStates(nn.Module):
    """The states a reader reads when it reads them as an int8-pcaD index stores them (`latent.state_dims`): a
    projection fitted once on training states, kept as buffers (saved and loaded with the reader, never trained),
    and the format's round trip through it."""

    def __init__(self, width: int, dims: int):
        super().__init__()
        self.format = StateFormat(f"int8-pca{dims}")
        self.format.check(width)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("directions", torch.zeros(dims, width))
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def projection(self) -> Projection:
        return Projection(self.mean, self.directions)

    @torch.no_grad()
    def fit(self, states: torch.Tensor) -> dict[str, float]:
        """Fit on (N, H) states; returns their count and the relative error the round trip leaves on them."""
        states = states.to(self.mean.device)
        fitted = Projection.fit(states, self.format.dims)
        self.mean.copy_(fitted.mean)
        self.directions.copy_(fitted.directions)
        self.fitted.fill_(True)
        centred = states.float() - self.mean
        error = (self(states) - states.float()).norm() / centred.norm().clamp_min(1e-12)
        return {"tokens": len(states), "relative_error": float(error)}

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """States (..., H) as an index of this format reads them back, float32, without gradient (int8 rounds)."""
        if not self.fitted:
            raise RuntimeError(f"states {self.format.name}: the projection is not fitted yet (training fits it on "
                               "the training contexts before its first step)")
        with torch.autocast(states.device.type, enabled=False):  # the projection in float32, as an index makes it
            flat = states.detach().float().reshape(-1, states.shape[-1])
            return self.format.round_trip(flat, 1, self.projection).reshape(states.shape)
