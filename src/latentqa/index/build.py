"""`latentqa index`: encode every paragraph of a corpus once with a reader's frozen context encoder, store it
(`store.py`), then build retrieval over all of it (`retrieval.py`).

The paragraphs are cut into shards of `shard_paragraphs`; each shard is encoded and written whole (temporary name,
then rename), so an interrupted build keeps every finished shard and a rerun encodes only the paragraphs no shard
holds, as does a run over a grown corpus. Shards are numbered in the order of the paragraphs still to encode, so a
build resumed at any point writes the same shards as one run at once.

Under `accelerate launch` / `torchrun` each process encodes every N-th shard; the main process builds retrieval
once all are written.
"""
from __future__ import annotations

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

from ..atomic import remove_dead_temps, write_file
from ..data.examples import Example, Paragraph
from ..data.features import encode_examples
from ..progress import progress_bar
from ..readers.state_cache import encoder_fingerprint, window_key
from .retrieval import build_retrieval, retrieval_current
from .store import HEADER_FILE, SHARDS, Header, IndexFolderError, IndexStore, paragraphs_in, shard_paths

log = logging.getLogger(__name__)

SHARD_PARAGRAPHS = 256
ENCODE_WINDOWS = 64  # windows per encoder call, shortest first so little is padding


def index_refusal(reader) -> str | None:
    """Why this reader's context states cannot be stored per paragraph (None: they can)."""
    if reader.kind != "latent":
        return f"the {reader.kind} reader has no context encoder"
    if reader.config.question_conditioning == "encoder":
        return "question_conditioning 'encoder' makes every context state depend on the question"
    if reader.config.window_packing == "greedy":
        return ("window_packing 'greedy' packs several paragraphs into one encoder window (a reader with 'paragraph' "
                "or 'sentence' windows can be indexed)")
    return None


def reader_header(reader, reader_name: str) -> Header:
    """What an index of this reader's states records, and what reading it later must match."""
    refusal = index_refusal(reader)
    if refusal:
        raise IndexFolderError(f"this reader cannot be indexed: {refusal}")
    return Header(encoder_fingerprint=encoder_fingerprint(reader.encoder), window_packing=reader.config.window_packing,
                  window_tokens=reader.collator().window_tokens, hidden_size=reader.encoder.config.hidden_size,
                  reader=reader_name)


def check_reader(header: Header, reader, directory: Path) -> None:
    """Refuse, in one line, a reader whose context states differ from those the index holds."""
    refusal = index_refusal(reader)
    if refusal:
        raise IndexFolderError(f"{directory}: this reader cannot read an index: {refusal}")
    mine = reader_header(reader, header.reader)
    for name in ("encoder_fingerprint", "window_packing", "window_tokens"):
        if getattr(mine, name) != getattr(header, name):
            raise IndexFolderError(f"{directory}: built with {name} {getattr(header, name)!r}, this reader has "
                                   f"{getattr(mine, name)!r}: its states are not this reader's (build another index)")


@dataclass
class BuildReport:
    paragraphs: int  # in the index now
    added: int  # encoded by this run (all processes)
    windows: int
    encode_seconds: float  # this process's encoder time
    seconds: float
    bytes: int  # the index folder on disk

    def line(self) -> str:
        return (f"{self.paragraphs} paragraphs ({self.added} added), {self.windows} windows, "
                f"{self.bytes / 2**20:.1f} MB ({self.bytes / max(self.paragraphs, 1) / 1024:.1f} KB a paragraph), "
                f"{self.seconds:.1f} s ({self.encode_seconds:.1f} s in the encoder)")


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


@torch.no_grad()
def encode_shard(reader, paragraphs: list[Paragraph], pad_id: int) -> tuple[dict[str, torch.Tensor], float]:
    """One shard's tensors (the layout in `store.py`) and the seconds spent in the encoder."""
    windows = paragraph_windows(reader, paragraphs)
    device = next(reader.encoder.parameters()).device
    states: list[torch.Tensor | None] = [None] * len(windows)
    seconds = 0.0
    order = sorted(range(len(windows)), key=lambda i: len(windows[i][0]))
    for start in range(0, len(order), ENCODE_WINDOWS):
        chunk = order[start:start + ENCODE_WINDOWS]
        width = len(windows[chunk[-1]][0])
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, :len(windows[i][0])] = torch.tensor(windows[i][0])
        began = time.perf_counter()
        out = reader.encoder(input_ids=ids.to(device), attention_mask=(ids != pad_id).to(device)).last_hidden_state
        seconds += time.perf_counter() - began
        for row, i in enumerate(chunk):
            states[i] = out[row, :len(windows[i][0])].cpu()
    vectors = torch.stack([F.normalize(s.mean(dim=0), dim=0) for s in states])
    lengths = torch.tensor([len(ids) for ids, _ in windows])
    return {
        "states": torch.cat(states).to(torch.float16),
        "offsets": F.pad(lengths.cumsum(0), (1, 0)),
        "keys": torch.tensor(np.frombuffer(b"".join(bytes.fromhex(window_key(torch.tensor(ids))) for ids, _ in windows),
                                           dtype=np.uint8).reshape(len(windows), 16).copy()),
        "window_paragraph": torch.tensor([p for _, p in windows]),
        "vectors": vectors.to(torch.float16),
    }, seconds


def build_index(reader, paragraphs: list[Paragraph], directory: str | Path, *, reader_name: str,
                shard_paragraphs: int = SHARD_PARAGRAPHS, progress: bool = True) -> BuildReport:
    """Add every paragraph not yet in the index at `directory` (created if absent); see the module docstring."""
    began = time.perf_counter()
    directory, state = Path(directory), PartialState()
    if shard_paragraphs < 1:
        raise ValueError(f"shard_paragraphs must be at least 1, got {shard_paragraphs}")
    reader.eval()
    wanted = reader_header(reader, reader_name)
    if state.is_main_process:
        (directory / SHARDS).mkdir(parents=True, exist_ok=True)
        remove_dead_temps(directory / SHARDS)
        if not (directory / HEADER_FILE).exists():
            write_file(directory / HEADER_FILE, lambda tmp: tmp.write_text(json_text(wanted.to_dict())))
    state.wait_for_everyone()
    check_reader(Header.read(directory), reader, directory)

    done = shard_paths(directory)
    taken = {p.title for path in done for p in paragraphs_in(path)}
    todo = []
    for paragraph in paragraphs:  # a title is one paragraph: the first given, or the one the index holds
        if paragraph.title not in taken:
            taken.add(paragraph.title)
            todo.append(paragraph)
    first = int(done[-1].stem) + 1 if done else 0
    chunks = [todo[i:i + shard_paragraphs] for i in range(0, len(todo), shard_paragraphs)]
    mine = list(range(state.process_index, len(chunks), state.num_processes))
    pad_id = reader.encoder_tokenizer.pad_token_id
    encode_seconds = 0.0
    bar = progress_bar(total=sum(len(chunks[i]) for i in mine), desc="index", unit="paragraph",
                       disable=not (progress and state.is_local_main_process))
    for i in mine:
        tensors, seconds = encode_shard(reader, chunks[i], pad_id)
        encode_seconds += seconds
        text = json_text([[p.title, list(p.sentences)] for p in chunks[i]])
        write_file(directory / SHARDS / f"{first + i:06d}.safetensors",
                   lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata={"paragraphs": text}))
        bar.update(len(chunks[i]))
    bar.close()
    state.wait_for_everyone()
    store = IndexStore(directory)
    if state.is_main_process and not retrieval_current(store):
        build_retrieval(store)
    state.wait_for_everyone()
    size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    return BuildReport(len(store), len(todo), store.num_windows, encode_seconds, time.perf_counter() - began, size)


def json_text(value) -> str:
    return json.dumps(value, ensure_ascii=False)
