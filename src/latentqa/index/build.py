"""`latentqa index`: encode every paragraph of a corpus once with a reader's frozen context encoder, store it
(`store.py`), then build retrieval over all of it (`retrieval.py`).

One build at a time holds the folder's lock. It first checks every shard the manifest lists against its size and
hash: a damaged or missing one leaves the manifest, and its paragraphs are encoded again. A paragraph is known by
its title; one whose text changed in the corpus is encoded again, and with `prune` one the corpus no longer holds
is removed. A shard holding such a paragraph leaves the index at the end of the build, its other paragraphs
encoded into new shards first. The paragraphs still to encode are cut into shards of `shard_paragraphs`, each
written whole (temporary name, then rename); the manifest enters them every `MANIFEST_SECONDS` and when a build is
interrupted (rewritten after every shard, it grew with the index: about 200 s of a 10^6-paragraph build), so an
interrupted build keeps every finished shard, a killed one all but the last seconds' (never entered, so never read,
then removed), and a rerun encodes only what is left, into the same shards one run at once writes. Retrieval is
rebuilt at the end whenever the manifest changed or a retrieval file is damaged.

States are stored in the format the index was created with (`--states`, `readers/state_format.py`). A projected
format's projection is fitted once, on the first shard's paragraphs, before any shard is encoded with it; if it is
later found missing or damaged, it is fitted again and every shard encoded again.

Under `accelerate launch` / `torchrun` each process encodes every N-th shard; the main process holds the lock,
enters the shards in the manifest and builds retrieval once all are written.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from accelerate import PartialState
from torch.nn import functional as F

from ..atomic import FolderLocked, folder_lock, remove_dead_temps, write_file
from ..config import ConfigError
from ..data.examples import DataError, Example, Paragraph
from ..data.features import encode_examples
from ..progress import progress_bar
from ..readers.state_cache import encode_windows, encoder_fingerprint, window_key
from ..readers.state_format import DEFAULT_STATES, Projection, StateFormat
from .manifest import SHARDS, IndexFolderError, Manifest, ShardEntry, file_sha256
from .retrieval import COMPRESS_ABOVE, RETRIEVAL_DIR, build_retrieval, retrieval_current
from .store import HEADER_FILE, PROJECTION_FILE, Header, IndexStore, paragraphs_in, shard_text

log = logging.getLogger(__name__)

SHARD_PARAGRAPHS = 256
MANIFEST_SECONDS = 10.0  # how often a build enters its new shards in the manifest: a kill loses at most this


def reader_header(reader, reader_name: str, states: str = DEFAULT_STATES) -> Header:
    """What an index of this reader's states records, and what reading it later must match."""
    refusal = reader.index_refusal()
    if refusal:
        raise IndexFolderError(f"this reader cannot be indexed: {refusal}")
    collate = reader.collator()
    return Header(encoder_fingerprint=encoder_fingerprint(reader.encoder), window_packing=collate.packing,
                  window_tokens=collate.window_tokens,
                  hidden_size=reader.encoder.config.hidden_size * len(reader.state_layers),
                  reader=reader_name, states=states)


def check_reader(header: Header, reader, directory: Path) -> None:
    """Refuse, in one line, a reader whose context states differ from those the index holds."""
    refusal = reader.index_refusal()
    if refusal:
        raise IndexFolderError(f"{directory}: this reader cannot read an index: {refusal}")
    mine = reader_header(reader, header.reader)
    for name in ("encoder_fingerprint", "window_packing", "window_tokens", "hidden_size"):
        if getattr(mine, name) != getattr(header, name):
            raise IndexFolderError(f"{directory}: built with {name} {getattr(header, name)!r}, this reader has "
                                   f"{getattr(mine, name)!r}: its states are not this reader's (build another index)")


@dataclass
class BuildReport:
    paragraphs: int  # in the index now
    added: int  # encoded by this run (all processes)
    windows: int
    removed: int  # paragraphs taken out: changed (then encoded again) or, with prune, gone from the corpus
    repaired: list[str]  # shard files found damaged or missing, whose paragraphs were encoded again
    encode_seconds: float  # this process's encoder time
    retrieval_seconds: float  # building retrieval (BM25, title links, compressed vectors); 0 where it was current
    seconds: float
    bytes: int  # the index folder on disk

    def line(self) -> str:
        removed = f", {self.removed} removed or replaced" if self.removed else ""
        repaired = f", {len(self.repaired)} damaged shard(s) rebuilt" if self.repaired else ""
        return (f"{self.paragraphs} paragraphs ({self.added} added{removed}{repaired}), "
                f"{self.windows} windows, "
                f"{self.bytes / 2**20:.1f} MB ({self.bytes / max(self.paragraphs, 1) / 1024:.1f} KB a paragraph), "
                f"{self.seconds:.1f} s ({self.encode_seconds:.1f} s in the encoder, "
                f"{self.retrieval_seconds:.1f} s building retrieval)")


def paragraph_windows(reader, paragraphs: list[Paragraph]) -> list[tuple[list[int], int]]:
    """Every window the reader's collator builds for each paragraph read alone, as (ids, paragraph number); with
    windows that never span paragraphs these are the windows of the paragraph in any context."""
    examples = [Example(id=str(i), question="", paragraphs=(p,)) for i, p in enumerate(paragraphs)]
    columns = encode_examples(examples, dataclasses.replace(reader.features, lexical=False),
                              question_tokenizer=reader.t5_tokenizer, context_tokenizer=reader.context_tokenizer,
                              progress=False)
    collate, windows = reader.collator(), []
    for i in range(len(examples)):
        if not columns["context_ids"][i]:
            continue
        batch = collate([{**{name: values[i] for name, values in columns.items()}, "index": 0}])
        windows += [(ids[mask].tolist(), i) for ids, mask in zip(batch["window_ids"], batch["window_mask"])]
    return windows


def paragraph_states(reader, paragraphs: list[Paragraph]) -> tuple[list[tuple[list[int], int]], list[torch.Tensor]]:
    """`paragraph_windows` and each window's states, float32 on the host."""
    windows = paragraph_windows(reader, paragraphs)
    states = encode_windows(reader.encoder, [torch.tensor(ids) for ids, _ in windows], reader.state_layers)
    return windows, [s.float().cpu() for s in states]


def fit_projection(reader, paragraphs: list[Paragraph], state_format: StateFormat) -> Projection:
    """The projection of a projected states format: the reader's own where it learnt from states stored through that
    format (`latent.state_dims`), else fitted on these paragraphs' states (a build's first shard)."""
    own = getattr(reader, "stored_states", None)
    if own is not None and own.format == state_format:
        return Projection(own.mean.cpu(), own.directions.cpu())
    return Projection.fit(torch.cat(paragraph_states(reader, paragraphs)[1]), state_format.dims)


@torch.no_grad()
def encode_shard(reader, paragraphs: list[Paragraph], state_format: StateFormat = StateFormat(),
                 projection: Projection | None = None) -> tuple[dict[str, torch.Tensor], float]:
    """One shard's tensors (the layout in `store.py`) and the seconds spent in the encoder."""
    began = time.perf_counter()
    windows, states = paragraph_states(reader, paragraphs)
    seconds = time.perf_counter() - began
    width = reader.encoder.config.hidden_size  # the last layer's states are the last `width` of each row
    vectors = torch.stack([F.normalize(s[:, -width:].mean(dim=0), dim=0) for s in states])
    lengths = torch.tensor([len(ids) for ids, _ in windows])
    return {
        **state_format.pack(torch.cat(states), len(reader.state_layers), projection),
        "offsets": F.pad(lengths.cumsum(0), (1, 0)),
        "keys": torch.tensor(np.frombuffer(b"".join(bytes.fromhex(window_key(torch.tensor(ids))) for ids, _ in windows),
                                           dtype=np.uint8).reshape(len(windows), 16).copy()),
        "window_paragraph": torch.tensor([p for _, p in windows]),
        "vectors": vectors.to(torch.float16),
        "text": shard_text(paragraphs),
    }, seconds


@dataclass
class Plan:
    """What a build does, the same in every process: the shards to drop once their paragraphs are encoded again,
    and the paragraphs to encode (new, changed, or left over from a dropped shard)."""

    dropped: list[ShardEntry]
    todo: list[Paragraph]
    removed: int


def plan_build(directory: Path, manifest: Manifest, paragraphs: list[Paragraph], prune: bool) -> Plan:
    """A title's paragraph is the one in its latest shard; the corpus (first of a title given twice) decides
    what changed. Deterministic, so a build resumed after a kill plans the rest of the same build."""
    given: dict[str, Paragraph] = {}
    for paragraph in paragraphs:
        given.setdefault(paragraph.title, paragraph)
    stored = [(entry, paragraphs_in(directory / SHARDS / entry.name)) for entry in manifest.shards]
    latest = {p.title: number for number, (_, held) in enumerate(stored) for p in held}
    current: dict[str, Paragraph] = {}
    dropped, leftover, removed = [], [], 0
    for number, (entry, held) in enumerate(stored):
        stale = [p for p in held if latest[p.title] != number or (p.title in given and given[p.title] != p)
                 or (prune and p.title not in given)]
        if not stale:
            current.update((p.title, p) for p in held)
            continue
        dropped.append(entry)
        changed = [p.title for p in stale if latest[p.title] == number]
        if changed:
            log.info("%s: %d paragraph(s) replaced by another text or pruned (%s); the shard is rewritten", entry.name,
                     len(changed), ", ".join(map(repr, changed[:3])) + (", ..." if len(changed) > 3 else ""))
        removed += len(changed)
        leftover += [p for p in held if p not in stale]
    todo, queued = [], set()
    for paragraph in [*given.values(), *leftover]:
        if paragraph.title not in current and paragraph.title not in queued:
            queued.add(paragraph.title)
            todo.append(paragraph)
    return Plan(dropped, todo, removed)


def check_shards(directory: Path, manifest: Manifest) -> tuple[Manifest, list[str]]:
    """The manifest without its damaged or missing shards (each file's size and hash checked), and their names."""
    kept, damaged = [], []
    for entry in manifest.shards:
        problem = entry.problem(directory, full=True)
        if problem:
            log.warning("%s: %s; its paragraphs are encoded again", directory / SHARDS / entry.name, problem)
            damaged.append(entry.name)
        else:
            kept.append(entry)
    return Manifest(kept), damaged


def read_manifest_or_start_over(directory: Path) -> Manifest:
    try:
        return Manifest.read(directory)
    except IndexFolderError as err:
        log.warning("%s: every shard is encoded again", err)
        return Manifest()


def remove_unlisted(directory: Path, manifest: Manifest) -> None:
    """Shard files no manifest lists (a build killed between writing a shard and entering it, a stray copy)."""
    listed = {e.name for e in manifest.shards}
    for path in (directory / SHARDS).iterdir():
        if path.name not in listed and not path.name.startswith("."):
            path.unlink()


def build_index(reader, paragraphs: list[Paragraph], directory: str | Path, *, reader_name: str,
                shard_paragraphs: int = SHARD_PARAGRAPHS, prune: bool = False, states: str | None = None,
                compress_above: int = COMPRESS_ABOVE, progress: bool = True) -> BuildReport:
    """Bring the index at `directory` (created if absent) to hold `paragraphs`; see the module docstring. `states`:
    the format a new index stores (`state_format`; None: `DEFAULT_STATES`); an existing one's must be the same.
    `compress_above`: the windows past which retrieval keeps its vectors compressed (`retrieval.py`)."""
    # cpu=True on a CPU reader: under torchrun without it every process would take itself for the only one
    directory = Path(directory)
    state = PartialState(cpu=next(reader.encoder.parameters()).device.type == "cpu")
    if shard_paragraphs < 1:
        raise ConfigError(f"shard_paragraphs must be at least 1, got {shard_paragraphs}")
    if states is not None:  # a format the command line names, refused in one line before any work
        try:
            StateFormat(states).check(reader_header(reader, reader_name).hidden_size)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    for paragraph in paragraphs:  # before any work: text a shard cannot hold would stop every build at its shard
        try:
            json_text([paragraph.title, list(paragraph.sentences)]).encode("utf-8")
        except UnicodeEncodeError as err:
            raise DataError(f"paragraph {paragraph.title!r:.80}: not valid Unicode text ({err.reason})") from None
    directory.mkdir(parents=True, exist_ok=True)
    lock = folder_lock(directory, "an index build") if state.is_main_process else contextlib.nullcontext()
    try:
        with lock:
            return _build(reader, paragraphs, directory, state, reader_name=reader_name,
                          shard_paragraphs=shard_paragraphs, prune=prune, states=states,
                          compress_above=compress_above, progress=progress)
    except FolderLocked as err:
        raise IndexFolderError(str(err)) from None


def _build(reader, paragraphs, directory: Path, state, *, reader_name, shard_paragraphs, prune, states,
           compress_above, progress):
    began = time.perf_counter()
    reader.eval()
    wanted = reader_header(reader, reader_name, states or DEFAULT_STATES)
    damaged: list[str] = []
    if state.is_main_process:
        (directory / SHARDS).mkdir(exist_ok=True)
        for folder in (directory, directory / SHARDS, directory / RETRIEVAL_DIR):
            remove_dead_temps(folder)
        if not (directory / HEADER_FILE).exists():
            write_header(directory, wanted)
        header = Header.read(directory)
        check_reader(header, reader, directory)
        if states is not None and states != header.states:
            raise IndexFolderError(f"{directory}: its states are stored as {header.states}, not {states}: build "
                                   "another index (--out NEW_FOLDER) for another format")
        manifest, damaged = check_shards(directory, read_manifest_or_start_over(directory))
        if header.projection_sha256 and not projection_whole(header, directory):
            log.warning("%s: missing or damaged; it is fitted again and every shard encoded again",
                        directory / PROJECTION_FILE)
            damaged += [e.name for e in manifest.shards]
            manifest = Manifest()
            write_header(directory, dataclasses.replace(header, projection_sha256=""))
        remove_unlisted(directory, manifest)
        manifest.write(directory)
    state.wait_for_everyone()
    if not state.is_main_process:  # the main process checked before it touched the folder
        check_reader(Header.read(directory), reader, directory)

    manifest = Manifest.read(directory)
    plan = plan_build(directory, manifest, paragraphs, prune)
    header = Header.read(directory)
    if state.is_main_process and header.state_format.dims and not header.projection_sha256 and plan.todo:
        # fitted once, before any shard is encoded with it (so no shard outlives the projection it was encoded with)
        fit_projection(reader, plan.todo[:shard_paragraphs], header.state_format).save(directory / PROJECTION_FILE)
        write_header(directory, dataclasses.replace(header, projection_sha256=file_sha256(directory / PROJECTION_FILE)))
    state.wait_for_everyone()
    header = Header.read(directory)
    projection = header.projection(directory) if plan.todo else None
    first = manifest.next_number(directory)
    chunks = [plan.todo[i:i + shard_paragraphs] for i in range(0, len(plan.todo), shard_paragraphs)]
    mine = list(range(state.process_index, len(chunks), state.num_processes))
    encode_seconds = retrieval_seconds = 0.0
    written: list[ShardEntry] = []
    bar = progress_bar(total=sum(len(chunks[i]) for i in mine), desc="index", unit="paragraph",
                       disable=not (progress and state.is_local_main_process))
    entered = time.perf_counter()
    try:
        for i in mine:
            tensors, seconds = encode_shard(reader, chunks[i], header.state_format, projection)
            encode_seconds += seconds
            path = directory / SHARDS / f"{first + i:06d}.safetensors"
            write_file(path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp)))
            if state.num_processes == 1:
                written.append(ShardEntry.of(path, len(chunks[i]), len(tensors["window_paragraph"])))
                if time.perf_counter() - entered >= MANIFEST_SECONDS:
                    Manifest(manifest.shards + written).write(directory)
                    entered = time.perf_counter()
            bar.update(len(chunks[i]))
    except BaseException:  # Ctrl-C or an error: every finished shard is kept
        if written:
            Manifest(manifest.shards + written).write(directory)
        raise
    finally:
        bar.close()
    state.wait_for_everyone()
    if state.is_main_process:
        if state.num_processes > 1:  # every process's shards, entered in number order
            for i, chunk in enumerate(chunks):
                path = directory / SHARDS / f"{first + i:06d}.safetensors"
                written.append(ShardEntry.of(path, len(chunk), _windows(path)))
        final = Manifest([e for e in manifest.shards if e not in plan.dropped] + written)
        final.write(directory)
        for entry in plan.dropped:  # after the manifest stops naming them; a server that mapped them keeps its copy
            (directory / SHARDS / entry.name).unlink(missing_ok=True)
        store = IndexStore(directory, final)
        if not retrieval_current(store, compress_above):
            retrieval_began = time.perf_counter()
            build_retrieval(store, compress_above)
            retrieval_seconds = time.perf_counter() - retrieval_began
    state.wait_for_everyone()
    store = IndexStore(directory)
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    return BuildReport(len(store), len(plan.todo), store.num_windows, plan.removed, damaged, encode_seconds,
                       retrieval_seconds, time.perf_counter() - began, size)


def projection_whole(header: Header, directory: Path) -> bool:
    try:
        header.projection(directory)
        return True
    except IndexFolderError:
        return False


def write_header(directory: Path, header: Header) -> None:
    write_file(directory / HEADER_FILE, lambda tmp: tmp.write_text(json_text(header.to_dict())))


def _windows(path: Path) -> int:
    with safetensors.safe_open(str(path), "pt") as shard:
        return shard.get_slice("window_paragraph").get_shape()[0]


def json_text(value) -> str:
    return json.dumps(value, ensure_ascii=False)
