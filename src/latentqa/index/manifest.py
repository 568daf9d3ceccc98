"""The one record of which shard files make up an index, in row order, with each file's size and hash.

    DIR/manifest.json   {"shards": [{"name", "bytes", "sha256", "paragraphs", "windows"}, ...]}

Readers take the shards the manifest lists, in its order, never a listing of the folder: a stray or half-written
file is not part of the index, and rows cannot shift under the retrieval files, which record the digest of the
manifest they were built from (`retrieval.py`). Only `latentqa index`, holding the folder's lock, writes it
(atomically, fsynced). Opening checks each listed shard's size; a build checks every hash.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import write_text
from ..data.examples import DataError

MANIFEST_FILE = "manifest.json"
SHARDS = "shards"
HASH_CHUNK = 1 << 20
SHARD_NAME = re.compile(r"\d{6,}\.safetensors")


class IndexFolderError(DataError):
    """An index folder that cannot be used as asked; the message names the folder or file."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardEntry:
    name: str  # file name under shards/
    bytes: int
    sha256: str
    paragraphs: int
    windows: int

    @classmethod
    def of(cls, path: Path, paragraphs: int, windows: int) -> "ShardEntry":
        return cls(path.name, path.stat().st_size, file_sha256(path), paragraphs, windows)

    @property
    def number(self) -> int:
        return int(self.name.split(".")[0])

    def problem(self, directory: Path, *, full: bool) -> str | None:
        """What is wrong with this shard's file (None: nothing): missing, another size, or (`full`) another hash."""
        path = directory / SHARDS / self.name
        if not path.is_file():
            return "missing"
        if path.stat().st_size != self.bytes:
            return f"{path.stat().st_size} bytes, the manifest says {self.bytes}"
        if full and file_sha256(path) != self.sha256:
            return "its content differs from the manifest's hash"
        return None


@dataclass
class Manifest:
    shards: list[ShardEntry] = field(default_factory=list)

    @classmethod
    def read(cls, directory: Path) -> "Manifest":
        """The manifest of `directory`; an empty one where none was written yet."""
        path = directory / MANIFEST_FILE
        if not path.exists():
            return cls()
        try:
            entries = json.loads(path.read_text())["shards"]
            manifest = cls([ShardEntry(**entry) for entry in entries])
            strange = [e.name for e in manifest.shards if not SHARD_NAME.fullmatch(e.name)]
            if strange:
                raise ValueError(f"shard names {strange[:3]} are not NNNNNN.safetensors")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise IndexFolderError(f"{path}: unreadable ({type(err).__name__}: {err}); run `latentqa index` on this "
                                   "folder again to rebuild it") from None
        return manifest

    def write(self, directory: Path) -> None:
        write_text(directory / MANIFEST_FILE, json.dumps({"shards": [asdict(e) for e in self.shards]}, indent=1))

    def digest(self) -> str:
        """Names the exact list of shards (and their content): what retrieval files are tied to."""
        return hashlib.sha256(json.dumps([asdict(e) for e in self.shards]).encode()).hexdigest()

    def next_number(self, directory: Path) -> int:
        """Above every listed shard and every shard-named file in the folder, so no write lands on a name in use."""
        files = [int(p.name.split(".")[0]) for p in (directory / SHARDS).glob("*.safetensors")
                 if SHARD_NAME.fullmatch(p.name)]
        return max([e.number for e in self.shards] + files, default=-1) + 1
