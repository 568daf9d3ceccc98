"""A corpus encoded once, on disk: per paragraph its text, the context states a latent reader reads, and
retrieval vectors; beside them a vector index, a lexical index and the title links (`retrieval.py`).

    DIR/index.json              what built it (`Header`): the encoder's fingerprint, window packing and size
    DIR/manifest.json           the shards that are the index, in row order, with sizes and hashes (`manifest.py`)
    DIR/shards/NNNNNN.safetensors  one build step's paragraphs, written whole under a temporary name and renamed:
        states (T, H)           every window's encoder states ([CLS] ... [SEP]) back to back, in the index's
                                format (`state_format`): fp32 or fp16; int8 with scales (T, layers) fp16; or
                                D-wide int8 codes (int4-pcaD: D / 2 uint8, two codes a byte) with scales (T, 1)
                                beside DIR/projection.safetensors
        offsets (W + 1,)        where each window's states start in `states`
        keys (W, 16) uint8      each window's content hash (`state_cache.window_key`)
        window_paragraph (W,)   each window's paragraph, as its place in the shard
        vectors (W, H) fp16     each window's mean state at unit length: all-MiniLM-style sentence embeddings
        text (bytes,) uint8     the shard's paragraphs as UTF-8 JSON [[title, [sentences]], ...] (a tensor, not
                                header metadata, whose size safetensors caps at 100 MB)
    DIR/retrieval.json, DIR/retrieval/   built from all shards at the end of a build (`retrieval.py`)

Windows are keyed by content, as in the state cache: the reader's collator builds the windows of retrieved
paragraphs as it always does, and `IndexStates` hands it their stored states instead of running the encoder.
Shard files open memory-mapped; a window's states are read only when asked for.
"""
from __future__ import annotations

import json
import math
import os
from array import array
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import safetensors
import torch
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence

from ..data.examples import Paragraph
from ..readers.state_cache import ContextStateCache, encoder_states, window_key
from ..readers.state_format import Projection, StateFormat
from .manifest import SHARDS, IndexFolderError, Manifest, file_sha256

HEADER_FILE = "index.json"
PROJECTION_FILE = "projection.safetensors"
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.int8: "I8", torch.uint8: "U8"}
NUMPY_DTYPES = {"F16": np.float16, "F32": np.float32, "I8": np.int8, "U8": np.uint8, "I64": np.int64}
FORMAT_VERSION = 3  # 3: the states' format recorded; 2 (fp16 only) and 1 are built again
REBUILD = "run `latentqa index` on this folder again to rebuild it"


@dataclass(frozen=True)
class Header:
    """What an index was built with; a reader must match it to read the index's states."""

    encoder_fingerprint: str  # `state_cache.encoder_fingerprint` of the reader's context encoder
    window_packing: str  # 'paragraph' or 'sentence': windows never span paragraphs
    window_tokens: int  # encoder positions per window
    hidden_size: int
    reader: str  # the reader folder it was built with (for `ask` without --model)
    states: str = "fp16"  # how states are stored (`state_format.StateFormat`)
    projection_sha256: str = ""  # the hash of DIR/projection.safetensors, for a projected format once fitted
    version: int = FORMAT_VERSION

    @classmethod
    def read(cls, directory: Path) -> "Header":
        path = directory / HEADER_FILE
        if not path.is_file():
            raise IndexFolderError(f"{directory}: not an index (no {HEADER_FILE}; build one with `latentqa index`)")
        try:
            fields = json.loads(path.read_text())
            header = cls(**{name: fields[name] for name in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as err:
            raise IndexFolderError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
        if header.version != FORMAT_VERSION:
            raise IndexFolderError(f"{path}: index format {header.version}, this latentqa reads {FORMAT_VERSION}: "
                                   "build a new index with `latentqa index --out NEW_FOLDER`")
        try:
            header.state_format.check(header.hidden_size)
        except ValueError as err:
            raise IndexFolderError(f"{path}: {err}") from None
        return header

    @property
    def state_format(self) -> StateFormat:
        return StateFormat(self.states)

    @property
    def stored_width(self) -> int:
        """The width of a stored token: the states' own, or the projection's directions (int4: two a byte)."""
        return self.state_format.stored_width(self.hidden_size)

    def projection(self, directory: Path) -> Projection | None:
        """The fitted projection of a projected format, checked against the hash recorded here; None for the
        others. One line naming the file where it is missing or differs."""
        if self.state_format.dims is None:
            return None
        path = directory / PROJECTION_FILE
        if not self.projection_sha256 or not path.is_file() or file_sha256(path) != self.projection_sha256:
            raise IndexFolderError(f"{path}: missing or damaged (it differs from {HEADER_FILE}); {REBUILD}")
        return Projection.load(path)

    def to_dict(self) -> dict:
        return asdict(self)


def shard_text(paragraphs: list[Paragraph]) -> torch.Tensor:
    """The `text` tensor of a shard: its paragraphs as UTF-8 JSON bytes."""
    data = json.dumps([[p.title, list(p.sentences)] for p in paragraphs], ensure_ascii=False).encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def open_shard(path: Path, paragraphs: int | None = None, windows: int | None = None, header: Header | None = None):
    """A shard opened memory-mapped after checking that its tensors agree with each other (and with the counts the
    manifest gives and the states format the header names): (handle, its paragraphs as its text holds them,
    [[title, [sentences]], ...], window_paragraph, keys, offsets). One line naming the file if not."""
    try:
        shard = safetensors.safe_open(str(path), "pt")
        small = read_tensors(path, ("text", "window_paragraph", "keys", "offsets"))
        found = json.loads(small["text"].tobytes().decode("utf-8"))  # [[title, [sentences]], ...]
        owner, keys, offsets = small["window_paragraph"], small["keys"], small["offsets"]
        rows, width = shard.get_slice("states").get_shape()
        vectors, vector_width = shard.get_slice("vectors").get_shape()  # the last layer's width: states may hold two
        consistent = (keys.shape == (len(owner), 16) and offsets.shape == (len(owner) + 1,) and offsets[0] == 0
                      and offsets[-1] == rows and bool(np.all(np.diff(offsets) > 0))
                      and bool(np.all((owner >= 0) & (owner < len(found)))) and bool(np.all(np.diff(owner) >= 0))
                      and vectors == len(owner) and vector_width > 0)
        if not consistent or (paragraphs, windows) not in ((None, None), (len(found), len(owner))):
            raise ValueError("its tensors do not agree with each other or with the manifest")
        if header is not None:  # the tensors the header's format stores, of its dtypes, widths and rows
            if shard.get_slice("states").get_shape()[1] != header.stored_width:
                raise ValueError(f"states {width} wide, the index stores {header.stored_width}")
            for name, dtype in header.state_format.stored_tensors().items():
                if name not in shard.keys() or shard.get_slice(name).get_dtype() != SAFETENSORS_DTYPES[dtype] or \
                        shard.get_slice(name).get_shape()[0] != rows:
                    raise ValueError(f"no {name} tensor of {rows} {dtype} rows (the index is {header.states})")
    except (safetensors.SafetensorError, OSError, KeyError, ValueError, TypeError) as err:
        raise IndexFolderError(f"{path}: damaged shard ({str(err).splitlines()[0]}); {REBUILD}") from None
    return shard, found, owner, keys, offsets


def _tensor_header(file) -> tuple[int, dict]:
    """Where a safetensors file's tensor bytes start, and its header (the file's layout: 8 bytes of header length,
    the JSON header, then the tensors' bytes, each at its `data_offsets` from there)."""
    length = int.from_bytes(file.read(8), "little")
    return 8 + length, json.loads(file.read(length))


def read_tensors(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Tensors of a safetensors file read with plain reads. Read through a memory map, a shard's few small tensors
    brought the mapped pages around them (states) into resident memory: 2.9 MB for 0.2 MB of text, 0.3 GB an
    index of 10^5 paragraphs, as much as the page cache held."""
    found = {}
    with open(path, "rb") as file:
        data, header = _tensor_header(file)
        for name in names:
            start, end = header[name]["data_offsets"]
            file.seek(data + start)
            found[name] = np.frombuffer(file.read(end - start), dtype=NUMPY_DTYPES[header[name]["dtype"]]).reshape(
                header[name]["shape"])
    return found


def mapped_tensor(path: Path, name: str) -> np.ndarray:
    """A tensor of a safetensors file as a read-only numpy memory map: a row costs a page read, not a call into
    safetensors."""
    with open(path, "rb") as file:
        data, header = _tensor_header(file)
    entry = header[name]
    mapped = np.memmap(path, dtype=NUMPY_DTYPES[entry["dtype"]], mode="r", offset=data + entry["data_offsets"][0],
                       shape=tuple(entry["shape"]))
    return mapped.view(np.ndarray)  # the same pages; indexing a plain array skips memmap's bookkeeping (1.6x)


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def paragraphs_in(path: Path) -> list[Paragraph]:
    return [Paragraph(title, tuple(sentences)) for title, sentences in open_shard(path)[1]]


class StoredParagraphs(Sequence):
    """An index's paragraphs by row, held as their titles and every sentence's UTF-8 bytes in one buffer; a
    `Paragraph` is made when a row is asked for. A Python string a sentence held 1.1 KB a paragraph (1 GB at 10^6);
    this holds about the text's bytes."""

    def __init__(self):
        self.titles: list[str] = []
        self._text = bytearray()
        self._bounds = array("q", [0])  # sentence i: _text[bounds[i]:bounds[i + 1]]
        self._first = array("q", [0])  # paragraph p: sentences [first[p], first[p + 1])

    def extend(self, shard: list) -> None:
        """Add a shard's paragraphs, [[title, [sentences]], ...] as its text holds them."""
        for title, texts in shard:
            self.titles.append(title)
            for text in texts:
                self._text += text.encode("utf-8")
                self._bounds.append(len(self._text))
            self._first.append(len(self._bounds) - 1)

    def __len__(self) -> int:
        return len(self.titles)

    def __eq__(self, other):
        if not isinstance(other, StoredParagraphs):
            return NotImplemented
        return (self.titles, self._text, self._bounds, self._first) == \
            (other.titles, other._text, other._bounds, other._first)

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        row = range(len(self))[row]  # a negative row counts from the end; past the end: IndexError
        bounds = self._bounds[self._first[row]:self._first[row + 1] + 1]
        return Paragraph(self.titles[row], tuple(self._text[a:b].decode("utf-8") for a, b in zip(bounds, bounds[1:])))


class IndexStore:
    """An index folder opened for reading: paragraphs by row (build order), their windows, states and vectors."""

    def __init__(self, directory: str | Path, manifest: Manifest | None = None):
        self.directory = Path(directory)
        self.header = Header.read(self.directory)
        self.format, self.projection = self.header.state_format, self.header.projection(self.directory)
        self.manifest = manifest if manifest is not None else Manifest.read(self.directory)
        self.paragraphs = StoredParagraphs()
        self._shards, window_shard, window_local, paragraph_windows, keys = [], [], [], [0], []
        self._identities: list[tuple[int, int, int]] = []  # each shard file as opened: states are read from it later
        for number, entry in enumerate(self.manifest.shards):
            path = self.directory / SHARDS / entry.name
            problem = entry.problem(self.directory, full=False)
            if problem:
                raise IndexFolderError(f"{path}: {problem}; {REBUILD}")
            shard, paragraphs, owner, shard_keys, offsets = open_shard(path, entry.paragraphs, entry.windows,
                                                                       self.header)
            self._shards.append((shard, offsets, path))
            self._identities.append(_identity(path.stat()))
            try:
                self.paragraphs.extend(paragraphs)
            except (ValueError, TypeError, AttributeError):  # JSON that is not [[title, [sentences]], ...]
                raise IndexFolderError(f"{path}: damaged shard (its text is not paragraphs); {REBUILD}") from None
            window_shard.append(np.full(len(owner), number))
            window_local.append(np.arange(len(owner)))
            paragraph_windows += (paragraph_windows[-1] + np.cumsum(np.bincount(owner, minlength=len(paragraphs)))
                                  ).tolist()
            keys.append(shard_keys)
        if not self._shards:
            raise IndexFolderError(f"{self.directory}: the index holds no paragraphs yet (its build has not finished a "
                              "shard)")
        self.window_shard, self.window_local = np.concatenate(window_shard), np.concatenate(window_local)
        self.paragraph_windows = np.asarray(paragraph_windows)  # (P + 1,) paragraph p owns windows [p[i], p[i + 1])
        flat_keys = np.ascontiguousarray(np.concatenate(keys)).view("S16").ravel()  # (W,) 16-byte strings
        self._key_order = np.argsort(flat_keys, kind="stable")
        self._sorted_keys = flat_keys[self._key_order]
        self.rows = {title: row for row, title in enumerate(self.paragraphs.titles)}
        self._vector_maps: dict[int, np.ndarray] = {}  # each shard's vectors, mapped once asked for
        self._layouts: dict[int, dict] = {}  # each shard's tensors' places in its file, once read

    def __len__(self) -> int:
        return len(self.paragraphs)

    @property
    def num_windows(self) -> int:
        return len(self.window_shard)

    def window_number(self, key: str) -> int | None:
        """The window stored under content hash `key` (hex, `window_key`), or None."""
        wanted = np.frombuffer(bytes.fromhex(key), dtype="S16")[0]
        at = int(np.searchsorted(self._sorted_keys, wanted))
        return int(self._key_order[at]) if at < len(self._sorted_keys) and self._sorted_keys[at] == wanted else None

    def window_states(self, window: int) -> torch.Tensor:
        """One window's stored states read back, (Lw, H) float32."""
        return self.windows_states([window])[0]

    def windows_states(self, windows: list[int]) -> list[torch.Tensor]:
        """The stored states of these windows read back, (Lw, H) float32 each, in the order asked. Each run of
        consecutive windows (a paragraph's, in one shard) is read and unpacked at once: a read costs far more than
        its tokens (10 paragraphs' states took 3.8 of a query's 35 ms at 10^6, window by window)."""
        out: list[torch.Tensor | None] = [None] * len(windows)
        order = sorted(range(len(windows)), key=windows.__getitem__)
        runs = []
        for i in order:
            w = windows[i]
            if runs and w == windows[runs[-1][-1]] + 1 and self.window_shard[w] == self.window_shard[w - 1]:
                runs[-1].append(i)
            else:
                runs.append([i])
        for run in runs:
            first = windows[run[0]]
            number = int(self.window_shard[first])
            offsets, local = self._shards[number][1], int(self.window_local[first])
            bounds = offsets[local:local + len(run) + 1].tolist()
            with self._open_shard_file(number) as file:
                states = self.format.unpack(partial(self._read_rows, file, self._layout(number)), bounds[0],
                                            bounds[-1], self.projection)
            for i, start, end in zip(run, bounds, bounds[1:]):
                out[i] = states[start - bounds[0]:end - bounds[0]]
        return out

    def _open_shard_file(self, number: int):
        """Shard `number`'s file, refused in one line if it is no longer the file this store opened (a build
        since then rewrote or removed it): its offsets would read another shard's bytes."""
        path = self._shards[number][2]
        try:
            file = open(path, "rb", buffering=0)
        except OSError as err:
            raise IndexFolderError(f"{path}: unreadable shard ({err.strerror}); if the index was rebuilt since it "
                                   "was opened, open it again") from None
        if _identity(os.fstat(file.fileno())) != self._identities[number]:
            file.close()
            raise IndexFolderError(f"{path}: the shard changed since the index was opened (a build since?); "
                                   "open the index again")
        return file

    def _layout(self, number: int) -> dict[str, tuple[int, np.dtype, tuple[int, ...]]]:
        """Where shard `number`'s tensors lie in its file: name → (first byte, dtype, shape of a row)."""
        if number not in self._layouts:
            with open(self._shards[number][2], "rb") as file:
                data, header = _tensor_header(file)
            self._layouts[number] = {name: (data + entry["data_offsets"][0], np.dtype(NUMPY_DTYPES[entry["dtype"]]),
                                            tuple(entry["shape"][1:]))
                                     for name, entry in header.items() if name != "__metadata__"}
        return self._layouts[number]

    @staticmethod
    def _read_rows(file, layout: dict, name: str, start: int, end: int) -> torch.Tensor:
        """Rows [start, end) of a tensor, read with one plain read of their bytes: safetensors' slice took 50 us a
        call, and a memory map of every shard costs a map each (a first read 0.2 ms; 20,000 shards at 5 M)."""
        first, dtype, row_shape = layout[name]
        row_bytes = dtype.itemsize * math.prod(row_shape)
        buffer = bytearray((end - start) * row_bytes)
        file.seek(first + start * row_bytes)
        if file.readinto(buffer) != len(buffer):
            raise IndexFolderError(f"{file.name}: damaged shard (shorter than its header says); {REBUILD}")
        return torch.from_numpy(np.frombuffer(buffer, dtype=dtype).reshape(end - start, *row_shape))

    def _vector_map(self, number: int) -> np.ndarray:
        """Shard `number`'s retrieval vectors, memory-mapped once asked for."""
        if number not in self._vector_maps:
            self._vector_maps[number] = mapped_tensor(self._shards[number][2], "vectors")
        return self._vector_maps[number]

    def paragraph_states(self, row: int) -> list[torch.Tensor]:
        """The stored states of each window of paragraph `row`, in reading order."""
        return self.windows_states(list(range(self.paragraph_windows[row], self.paragraph_windows[row + 1])))

    def vectors(self) -> np.ndarray:
        """Every window's retrieval vector, (W, H) float32, in window order."""
        return np.concatenate([shard.get_tensor("vectors").float().numpy() for shard, _, _ in self._shards])

    def window_vectors(self, windows: np.ndarray) -> np.ndarray:
        """The retrieval vectors of these windows, (n, H) float32, read from the shards (memory-mapped)."""
        out = np.empty((len(windows), self._vector_map(0).shape[1]), dtype=np.float32)
        shards = self.window_shard[windows]
        order = np.argsort(shards, kind="stable")
        for at in np.split(order, np.flatnonzero(np.diff(shards[order])) + 1):
            if len(at):
                out[at] = self._vector_map(shards[at[0]])[self.window_local[windows[at]]]
        return out

    def shard_of(self, window: int) -> Path:
        return self._shards[self.window_shard[window]][2]

    def window_paragraphs(self) -> np.ndarray:
        """Each window's paragraph row, (W,)."""
        return np.repeat(np.arange(len(self.paragraphs)), np.diff(self.paragraph_windows))


class IndexStates:
    """What a latent reader reads its context states through (`LatentReader.use_state_cache`): windows the index
    holds come from disk; any other (a paragraph a query brought) goes to `fallback` (a `ContextStateCache`) or
    the encoder. `hits` and `misses` count windows."""

    def __init__(self, store: IndexStore, fallback: ContextStateCache | None = None):
        self.store, self.fallback = store, fallback
        self.hits = self.misses = 0

    def stats(self) -> dict:
        return {"index_hits": self.hits, "index_misses": self.misses,
                **({"fallback": self.fallback.stats()} if self.fallback is not None else {})}

    @torch.no_grad()
    def encode(self, encoder, window_ids: torch.Tensor, window_mask: torch.Tensor,
               layers: tuple[int, ...] = (-1,)) -> torch.Tensor:
        """(W, Lw) → (W, Lw, H × layers) float32, as `ContextStateCache.encode`; the index holds the states of the
        layers the reader it was built with keeps (its header's width says how many)."""
        lengths = window_mask.sum(dim=1).tolist()
        host_ids = window_ids.cpu()
        found = [self.store.window_number(window_key(ids[:n])) for ids, n in zip(host_ids, lengths)]
        missing = [i for i, number in enumerate(found) if number is None]
        self.hits += len(found) - len(missing)
        self.misses += len(missing)
        read = iter(self.store.windows_states([number for number in found if number is not None]))
        states = [None if number is None else next(read) for number in found]
        for number, state, n in zip(found, states, lengths):
            if state is not None and len(state) != n:  # a hash collision or a damaged shard: never pad or crop
                raise IndexFolderError(f"{self.store.shard_of(number)}: window {number} holds {len(state)} states for "
                                       f"a window of {n} tokens; {REBUILD}")
        if missing:
            rows = torch.tensor(missing, device=window_ids.device)
            ids, mask = window_ids[rows], window_mask[rows]
            computed = self.fallback.encode(encoder, ids, mask, layers) if self.fallback is not None else \
                encoder_states(encoder, ids, mask, layers)
            for row, i in enumerate(missing):
                states[i] = computed[row, :lengths[i]].cpu()
        padded = pad_sequence([s.float() for s in states], batch_first=True)  # (W, max length, H)
        padded = F.pad(padded, (0, 0, 0, window_ids.shape[1] - padded.shape[1]))
        return padded.to(window_ids.device)
