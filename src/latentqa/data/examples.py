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


def checked_example(where: str, *, example_id, question, titles, sentences, facts, answer=None, kind=None,
                    level=None) -> Example:
    """An Example from a source's raw fields (either schema), each checked for its type. `titles` and `sentences`
    run in parallel (one title and one list of sentences per paragraph); `facts` is a list of (title, sent_id).
    A wrong type is a DataError naming `where` and the field."""
    def expect(ok: bool, field_name: str, wanted: str, value) -> None:
        if not ok:
            raise DataError(f"{where}: {field_name} must be {wanted}, got {value!r:.80}")

    expect(isinstance(example_id, (str, int)) and not isinstance(example_id, bool), "the id", "a string", example_id)
    expect(isinstance(question, str), "question", "a string", question)
    expect(answer is None or isinstance(answer, str), "answer", "a string", answer)
    for name, value in (("type", kind), ("level", level)):
        expect(value is None or isinstance(value, str), name, "a string", value)
    expect(isinstance(titles, (list, tuple)) and isinstance(sentences, (list, tuple)) and len(titles) == len(sentences),
           "context", "a list of [title, [sentences]] pairs", [titles, sentences])
    for i, (title, sents) in enumerate(zip(titles, sentences)):
        expect(isinstance(title, str), f"context paragraph {i} title", "a string", title)
        expect(isinstance(sents, (list, tuple)) and all(isinstance(x, str) for x in sents),
               f"context paragraph {i} ({title}) sentences", "a list of strings", sents)
    expect(isinstance(facts, (list, tuple)), "supporting_facts", "a list of [title, sent_id] pairs", facts)
    for fact in facts:
        expect(isinstance(fact, (list, tuple)) and len(fact) == 2 and isinstance(fact[0], str)
               and isinstance(fact[1], int) and not isinstance(fact[1], bool),
               "each supporting fact", "a [title, integer sent_id] pair", fact)
    return Example(id=str(example_id), question=question, answer=answer, type=kind, level=level,
                   paragraphs=tuple(Paragraph(t, tuple(s)) for t, s in zip(titles, sentences)),
                   supporting_facts=tuple((t, int(i)) for t, i in facts))
