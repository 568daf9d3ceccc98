"""Title links: for each paragraph, the other paragraphs whose title its text names (HotpotQA's bridge questions go
from a paragraph to one it names). A title is named by its key, its words in lower case without a trailing
"(...)" ("Alder (band)" is named "Alder"), found as whole words in the paragraph's sentences.

Kept across builds, as BM25's terms are (`retrieval.py`), so that a build reads only what is new:
    retrieval/links/titles.safetensors        every title key the index has held, in the order first seen: a log
                                              that only grows, written durably before any file that refers to it
    retrieval/links/SHARD_HASH.safetensors    per shard: for each paragraph, the log entries its text names among
                                              the first `checked` ones
A build appends the keys it has not seen to the log. A new shard's paragraphs are read in full against the whole
log. A kept shard is checked only against the entries added since: a paragraph can name a key only if it holds
every BM25 term of the key (the same words, stemmed, stopwords left out), so BM25's postings give the few
paragraphs to read. A key of stopwords alone is looked for in every paragraph's text. The links are then the named
keys' paragraphs in the index now: an index grown in two runs links exactly as one built at once.
"""
from __future__ import annotations

import json
import logging
import re
import uuid
from pathlib import Path
from typing import Container, Iterable

import numpy as np
import safetensors.numpy

from ..atomic import write_file
from ..data.examples import Paragraph

log = logging.getLogger(__name__)

MAX_TITLE_WORDS = 10
WORD = re.compile(r"\w+")
DISAMBIGUATION = re.compile(r"\s*\([^)]*\)\s*$")  # "Alder (band)" is named "Alder" in text
LINKS_DIR, LOG_FILE = "links", "titles.safetensors"


def title_key(title: str) -> str:
    return " ".join(WORD.findall(DISAMBIGUATION.sub("", title).lower()))


def text_words(paragraph: Paragraph) -> list[str]:
    return WORD.findall(" ".join(paragraph.sentences).lower())


def named_keys(words: list[str], keys: Container[str], longest: int) -> set[str]:
    """The keys among `keys` that `words` hold as consecutive words, of at most `longest` words."""
    return {gram for n in range(1, min(longest, MAX_TITLE_WORDS) + 1) for i in range(len(words) - n + 1)
            if (gram := " ".join(words[i:i + n])) in keys}


def links_from_named(paragraphs: list[Paragraph], named: Iterable[Iterable[str]]) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr (P + 1,), indices) of each paragraph's links, from the keys its text names."""
    by_key: dict[str, list[int]] = {}
    for row, paragraph in enumerate(paragraphs):
        key = title_key(paragraph.title)
        if key:
            by_key.setdefault(key, []).append(row)
    indptr, indices = [0], []
    for row, keys in enumerate(named):
        indices += sorted({other for key in keys for other in by_key.get(key, ()) if other != row})
        indptr.append(len(indices))
    return np.asarray(indptr, dtype=np.int64), np.asarray(indices, dtype=np.int64)


def title_links(paragraphs: list[Paragraph]) -> tuple[np.ndarray, np.ndarray]:
    """Every paragraph read against every title: what the kept files must always give."""
    keys = {title_key(p.title) for p in paragraphs} - {""}
    longest = max((len(key.split()) for key in keys), default=1)
    return links_from_named(paragraphs, (named_keys(text_words(p), keys, longest) for p in paragraphs))


class TitleLog:
    """Every title key an index has held, in the order first seen, under an id that changes if it is started anew."""

    def __init__(self, keys: list[str] | None = None, log_id: str | None = None):
        self.keys = keys or []
        self.position = {key: i for i, key in enumerate(self.keys)}
        self.log_id = log_id or uuid.uuid4().hex

    @classmethod
    def read(cls, path: Path) -> "TitleLog":
        try:
            stored = safetensors.numpy.load_file(str(path))
            keys, log_id = json.loads(bytes(stored["log"]).decode("utf-8"))
            return cls(keys, log_id)
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, KeyError, TypeError, safetensors.SafetensorError) as err:
            log.warning("%s: unreadable (%s); every paragraph's links are read again", path, type(err).__name__)
            return cls()

    def extend(self, keys: Iterable[str]) -> bool:
        grew = False
        for key in keys:
            if key and key not in self.position:
                self.position[key] = len(self.keys)
                self.keys.append(key)
                grew = True
        return grew

    def write(self, path: Path) -> None:
        text = json.dumps([self.keys, self.log_id], ensure_ascii=False).encode("utf-8")
        log_bytes = np.frombuffer(text, dtype=np.uint8)
        write_file(path, lambda tmp: safetensors.numpy.save_file({"log": log_bytes}, str(tmp)))

    @property
    def longest(self) -> int:
        return max((len(key.split()) for key in self.keys), default=1)


def _read_shard(path: Path, title_log: TitleLog, paragraphs: int) -> tuple[list[set[int]], int] | None:
    """A shard's named log entries per paragraph and how many entries they were checked against; None where the
    file is missing, damaged, or of another log."""
    try:
        stored = safetensors.numpy.load_file(str(path))
        indptr, named, checked = stored["indptr"], stored["named"], int(stored["checked"][0])
        same_log = bytes(stored["log_id"]).decode("ascii") == title_log.log_id
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, IndexError, UnicodeDecodeError, safetensors.SafetensorError) as err:
        log.warning("%s: unreadable (%s); the shard's links are read again", path, type(err).__name__)
        return None
    if not (same_log and len(indptr) == paragraphs + 1 and indptr[0] == 0 and indptr[-1] == len(named)
            and bool(np.all(np.diff(indptr) >= 0)) and checked <= len(title_log.keys)
            and bool(np.all(named < checked))):
        return None
    return [set(named[indptr[i]:indptr[i + 1]].tolist()) for i in range(paragraphs)], checked


def _write_shard(path: Path, title_log: TitleLog, named: list[set[int]]) -> None:
    indptr = np.cumsum([0] + [len(entries) for entries in named]).astype(np.int64)
    flat = np.asarray([entry for entries in named for entry in sorted(entries)], dtype=np.int64)
    tensors = {"indptr": indptr, "named": flat, "checked": np.asarray([len(title_log.keys)], dtype=np.int64),
               "log_id": np.frombuffer(title_log.log_id.encode("ascii"), dtype=np.uint8)}
    path.parent.mkdir(exist_ok=True)
    write_file(path, lambda tmp: safetensors.numpy.save_file(tensors, str(tmp)),
               durable=False)  # checked when read; a lost file is read again


def _namers(key: str, kept: np.ndarray, lexical, paragraphs: list[Paragraph], words: dict[int, list[str]]) -> list[int]:
    """The rows kept (a mask over rows) whose text names `key`: those holding all of its BM25 terms, read."""
    terms = lexical.terms(key)
    if terms is None:  # a term no paragraph holds
        return []
    if terms:
        candidates = lexical.postings(terms[0])
        for term in terms[1:]:
            candidates = np.intersect1d(candidates, lexical.postings(term), assume_unique=True)
        candidates = candidates[kept[candidates]].tolist()
    else:  # stopwords alone: every kept paragraph holding each word in its text
        parts = key.split()
        candidates = [row for row in np.flatnonzero(kept).tolist()
                      if all(part in " ".join(paragraphs[row].sentences).lower() for part in parts)]
    found = []
    for row in candidates:
        if row not in words:
            words[row] = text_words(paragraphs[row])
        if named_keys(words[row], {key}, MAX_TITLE_WORDS):
            found.append(row)
    return found


def build_links(directory: Path, shards: list[tuple[str, int]], paragraphs: list[Paragraph],
                lexical) -> tuple[np.ndarray, np.ndarray]:
    """The links of every paragraph of an index whose shards are `shards` ((hash, paragraphs) in row order),
    read from and kept in `directory` (retrieval/links) as the module docstring says. `lexical`: BM25 over the
    same paragraphs (`lexical.Lexical`), for its postings."""
    directory.mkdir(parents=True, exist_ok=True)
    title_log = TitleLog.read(directory / LOG_FILE)
    if title_log.extend(title_key(p.title) for p in paragraphs):
        title_log.write(directory / LOG_FILE)  # before any shard file counts its entries
    keys, longest = title_log.position, title_log.longest
    starts = np.cumsum([0] + [count for _, count in shards])
    stored, stale_from = [], len(title_log.keys)
    for (sha, count), start in zip(shards, starts):
        kept = _read_shard(directory / f"{sha[:32]}.safetensors", title_log, count)
        stored.append(kept)
        if kept is not None:
            stale_from = min(stale_from, kept[1])
    kept_rows = np.zeros(len(paragraphs), dtype=bool)
    for (_, count), start, kept in zip(shards, starts, stored):
        kept_rows[start:start + count] = kept is not None
    words: dict[int, list[str]] = {}
    added: dict[int, set[int]] = {}  # row of a kept shard → the log entries past `stale_from` it names
    for entry in range(stale_from, len(title_log.keys)):
        for row in _namers(title_log.keys[entry], kept_rows, lexical, paragraphs, words):
            added.setdefault(row, set()).add(entry)
    named: list[set[int]] = []
    for (sha, count), start, kept in zip(shards, starts, stored):
        rows = range(start, start + count)
        if kept is None:
            entries = [{keys[key] for key in named_keys(text_words(paragraphs[row]), keys, longest)} for row in rows]
        else:
            entries, checked = kept
            entries = [own | {e for e in added.get(row, ()) if e >= checked} for own, row in zip(entries, rows)]
        if kept is None or kept[1] < len(title_log.keys):
            _write_shard(directory / f"{sha[:32]}.safetensors", title_log, entries)
        named += entries
    return links_from_named(paragraphs, ([title_log.keys[e] for e in entries] for entries in named))


def remove_unlisted(directory: Path, shards: list[tuple[str, int]]) -> None:
    """The links of shards that left the index, and dead temporaries; the log stays."""
    kept = {f"{sha[:32]}.safetensors" for sha, _ in shards} | {LOG_FILE}
    for path in directory.iterdir():
        if path.name not in kept:
            path.unlink(missing_ok=True)
