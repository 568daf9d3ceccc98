"""One typed HotpotQA example, whatever the source it was read from."""
from __future__ import annotations

from dataclasses import dataclass, field


class DataError(ValueError):
    """Input that cannot be loaded; the message names the file and the example id or position."""


@dataclass(frozen=True)
class Paragraph:
    title: str
    sentences: tuple[str, ...]


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    paragraphs: tuple[Paragraph, ...]
    answer: str | None = None  # None for unlabelled data (e.g. a test split)
    supporting_facts: tuple[tuple[str, int], ...] = ()  # (title, sent_id), as given by the source
    type: str | None = None  # "bridge" or "comparison"
    level: str | None = None  # "easy", "medium" or "hard"

    def sentence_keys(self) -> list[tuple[str, int]]:
        """(title, sent_id) of every context sentence, in reading order."""
        return [(p.title, i) for p in self.paragraphs for i in range(len(p.sentences))]

    def unresolved_facts(self) -> list[tuple[str, int]]:
        """Supporting facts that name no sentence of the context (unknown title or sentence id)."""
        keys = set(self.sentence_keys())
        return [f for f in self.supporting_facts if f not in keys]


@dataclass
class LoadReport:
    """What a loader had to warn about; examples are kept, the counts are shown to the user."""

    source: str
    warnings: dict[str, list[str]] = field(default_factory=dict)

    def warn(self, kind: str, example_id: str) -> None:
        self.warnings.setdefault(kind, []).append(example_id)

    def lines(self) -> list[str]:
        out = []
        for kind, ids in sorted(self.warnings.items()):
            shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
            out.append(f"{self.source}: {len(ids)} example(s) with {kind} (kept): {shown}")
        return out


def check_example(example: Example, report: LoadReport) -> Example:
    """Record what would silently weaken an example; the example itself is kept unchanged."""
    if not any(p.sentences for p in example.paragraphs):
        report.warn("an empty context", example.id)
    if example.unresolved_facts():
        report.warn("a supporting fact not found in the context", example.id)
    return example
