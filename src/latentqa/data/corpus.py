"""A corpus of paragraphs to index: every distinct paragraph of a data source, or a JSONL file of paragraphs.

A corpus source is what `--data` takes (`sources.load_examples`: the paragraphs of every example's context, in
order) or a `.jsonl` file with one paragraph per line, `{"title": ..., "sentences": [...]}` or
`{"title": ..., "text": ...}` (a text is split by `split_sentences`). A paragraph is known by its title, as in
HotpotQA (Wikipedia titles are unique): a repeated title keeps its first paragraph, an empty paragraph is left
out; both are counted and shown. A line that is not UTF-8 or not JSON (a truncated file) stops the load with the
file and line.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from .examples import DataError, Paragraph
from .sources import load_examples

log = logging.getLogger(__name__)

# A sentence ends at . ! or ? (a closing quote or bracket may follow) before whitespace and an upper-case letter,
# a digit or an opening quote or bracket. Abbreviations such as "Dr. Smith" are split too: callers who have
# sentences already (HotpotQA's own paragraphs) should pass them as a list.
SENTENCE_BREAK = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """A paragraph's text as sentences, by `SENTENCE_BREAK`; blank pieces dropped."""
    return [s for s in (piece.strip() for piece in SENTENCE_BREAK.split(text)) if s]


@dataclass
class CorpusReport:
    """What loading a corpus left out, by kind, with the titles concerned."""

    source: str
    left_out: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, kind: str, title: str) -> None:
        self.left_out.setdefault(kind, []).append(title)

    def lines(self) -> list[str]:
        return [f"{self.source}: {len(titles)} paragraph(s) left out, {kind}: "
                + ", ".join(map(repr, titles[:3])) + (", ..." if len(titles) > 3 else "")
                for kind, titles in sorted(self.left_out.items())]


def load_corpus(source: str) -> tuple[list[Paragraph], CorpusReport]:
    """The distinct, non-empty paragraphs of `source` in reading order, and what was left out (logged too)."""
    report = CorpusReport(source)
    candidates = _jsonl_paragraphs(Path(source)) if source.endswith(".jsonl") else \
        [p for example in load_examples(source)[0] for p in example.paragraphs]
    seen: dict[str, Paragraph] = {}
    for paragraph in candidates:
        if not any(s.strip() for s in paragraph.sentences):
            report.skip("empty (no sentence with text)", paragraph.title)
        elif paragraph.title in seen:
            if seen[paragraph.title] != paragraph:  # the same paragraph in many contexts is the normal case
                report.skip("a title already taken by another text (the first kept)", paragraph.title)
        else:
            seen[paragraph.title] = paragraph
    if not seen:
        raise DataError(f"{source}: holds no paragraph with text")
    for line in report.lines():
        log.warning(line)
    return list(seen.values()), report


def _jsonl_paragraphs(path: Path) -> list[Paragraph]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    paragraphs = []
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            where = f"{path}, line {number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{where}: not UTF-8 (byte {err.start})") from None
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: not valid JSON ({err.msg}, column {err.colno}); a truncated file?") from None
            paragraph = _paragraph(record, where)
            try:  # JSON may escape a lone surrogate ("\\ud800"), which no UTF-8 file can hold
                "".join((paragraph.title, *paragraph.sentences)).encode("utf-8")
            except UnicodeEncodeError as err:
                raise DataError(f"{where}: not valid Unicode text ({err.reason} at character {err.start})") from None
            paragraphs.append(paragraph)
    return paragraphs


def _paragraph(record, where: str) -> Paragraph:
    if not isinstance(record, dict) or not isinstance(record.get("title"), str):
        raise DataError(f"{where}: expected an object with a string title, got {record!r:.80}")
    body = record.get("sentences", record.get("text"))
    if ("sentences" in record) == ("text" in record):
        raise DataError(f"{where}: give either sentences (a list of strings) or text (a string)")
    if isinstance(body, str):
        return Paragraph(record["title"], tuple(split_sentences(body)))
    if isinstance(body, list) and all(isinstance(s, str) for s in body):
        return Paragraph(record["title"], tuple(body))
    raise DataError(f"{where}: sentences must be a list of strings, got {body!r:.80}")
