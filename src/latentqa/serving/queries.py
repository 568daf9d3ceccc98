"""What a caller asks, checked field by field: a question and its retrieved paragraphs, as an `Example`.

The Python API and the HTTP server read queries here, so both accept the same shapes and name the same field in
an error. A paragraph is `{"title": ..., "sentences": [...]}`, `{"title": ..., "text": ...}`, or the pair
`[title, [sentences]]` (HotpotQA's shape) / `[title, text]`. A text is split into sentences by `split_sentences`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import option
from ..data.corpus import split_sentences
from ..data.examples import Example, Paragraph

QUERY_FIELDS = ("id", "question", "paragraphs", "latents")


class RequestError(ValueError):
    """A query that cannot be answered as given; `field` names where (e.g. `paragraphs[2].sentences[0]`)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True)
class Limits:
    """Bounds on one query and one HTTP body (`latentqa serve` has a flag per field). A HotpotQA distractor context
    (10 paragraphs, about 40 sentences, at most about 3,500 word pieces) fits easily."""

    max_paragraphs: int = option(64, "paragraphs in one query at most")
    max_sentences: int = option(1024, "sentences in one query at most, all paragraphs together")
    max_question_chars: int = option(2000, "characters of a question at most")
    max_context_tokens: int = option(16384, "context-encoder tokens in one query at most, counted after tokenizing "
                                            "(a HotpotQA context has at most about 3,500)")
    max_queries: int = option(64, "queries in one request at most")
    max_body_mb: float = option(4.0, "largest request body, in MB")

    def __post_init__(self):
        for name, value in vars(self).items():
            if not 0 < value < math.inf or (name != "max_body_mb" and value < 1):
                raise ValueError(f"{name} must be {'a finite number above 0' if name == 'max_body_mb' else 'at least 1'}"
                                 f", got {value:g}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


def _text(value: str, field: str) -> str:
    """`value` if it is text a tokenizer can take: a JSON escape such as \\ud800 decodes to a lone surrogate,
    which is not valid Unicode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise RequestError(field, f"not valid Unicode: a lone surrogate at character {err.start}") from None
    return value


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def parse_paragraph(value, field: str) -> Paragraph:
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"title", "sentences", "text"})
        if unknown:
            raise RequestError(f"{field}.{unknown[0]}", "unknown field (a paragraph has title and sentences or text)")
        if "title" not in value:
            raise RequestError(f"{field}.title", "missing")
        if ("sentences" in value) == ("text" in value):
            raise RequestError(field, "give either sentences (a list of strings) or text (a string)")
        title, body, body_field = value["title"], value.get("sentences", value.get("text")), \
            f"{field}.{'sentences' if 'sentences' in value else 'text'}"
        title_field = f"{field}.title"
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        (title, body), title_field, body_field = value, f"{field}[0]", f"{field}[1]"
    else:
        raise RequestError(field, f"a paragraph is {{title, sentences}}, {{title, text}} or [title, sentences], "
                                  f"got {_kind(value)}")
    if not isinstance(title, str):
        raise RequestError(title_field, f"the title must be a string, got {_kind(title)}")
    _text(title, title_field)
    if isinstance(body, str):
        sentences = split_sentences(_text(body, body_field))
    elif isinstance(body, (list, tuple)):
        for i, sentence in enumerate(body):
            if not isinstance(sentence, str):
                raise RequestError(f"{body_field}[{i}]", f"a sentence must be a string, got {_kind(sentence)}")
            _text(sentence, f"{body_field}[{i}]")
        sentences = list(body)
    else:
        raise RequestError(body_field, f"must be a list of sentences or a text, got {_kind(body)}")
    return Paragraph(title, tuple(sentences))


def parse_latents(value, field: str) -> int | None:
    """A query's `latents`: how many of the reader's latents to answer from (None: not given)."""
    latents = value.get("latents") if isinstance(value, dict) else None
    if latents is not None and (not isinstance(latents, int) or isinstance(latents, bool) or latents < 1):
        raise RequestError(field + "latents", f"must be a positive integer, got {latents!r}")
    return latents


def parse_query(value, limits: Limits = Limits(), field: str = "", paragraphs_optional: bool = False) -> Example:
    """A query object (a dict with question, paragraphs and an optional id) as an unlabelled `Example`. The id is
    the caller's (None when not given); `field` prefixes the names in errors (`[3].` for the 4th of a list).
    `paragraphs_optional` (an index retrieves them): a query without paragraphs is an Example with none."""
    if not isinstance(value, dict):
        raise RequestError(field.rstrip(".") or "body", f"a query is an object with question and paragraphs, "
                                                        f"got {_kind(value)}")
    unknown = sorted(set(value) - set(QUERY_FIELDS))
    if unknown:
        raise RequestError(field + unknown[0], f"unknown field (a query has {', '.join(QUERY_FIELDS)})")
    query_id = value.get("id")
    if query_id is not None and (not isinstance(query_id, (str, int)) or isinstance(query_id, bool)):
        raise RequestError(field + "id", f"must be a string or an integer, got {_kind(query_id)}")
    if isinstance(query_id, str):
        _text(query_id, field + "id")
    question = value.get("question")
    if question is None:
        raise RequestError(field + "question", "missing")
    if not isinstance(question, str):
        raise RequestError(field + "question", f"must be a string, got {_kind(question)}")
    _text(question, field + "question")
    if not question.strip():
        raise RequestError(field + "question", "is empty")
    if len(question) > limits.max_question_chars:
        raise RequestError(field + "question", f"{len(question)} characters, over the limit of "
                                               f"{limits.max_question_chars}")
    paragraphs = value.get("paragraphs")
    if paragraphs is None and paragraphs_optional:
        return Example(id=None if query_id is None else str(query_id), question=question, paragraphs=())
    if paragraphs is None:
        raise RequestError(field + "paragraphs", "missing")
    if not isinstance(paragraphs, (list, tuple)):
        raise RequestError(field + "paragraphs", f"must be a list of paragraphs, got {_kind(paragraphs)}")
    if len(paragraphs) > limits.max_paragraphs:
        raise RequestError(field + "paragraphs", f"{len(paragraphs)} paragraphs, over the limit of "
                                                 f"{limits.max_paragraphs}")
    parsed = tuple(parse_paragraph(p, f"{field}paragraphs[{i}]") for i, p in enumerate(paragraphs))
    sentences = sum(len(p.sentences) for p in parsed)
    if sentences > limits.max_sentences:
        raise RequestError(field + "paragraphs", f"{sentences} sentences, over the limit of {limits.max_sentences}")
    if not any(s.strip() for p in parsed for s in p.sentences):
        raise RequestError(field + "paragraphs", "the context is empty: no paragraph has a non-blank sentence")
    return Example(id=None if query_id is None else str(query_id), question=question, paragraphs=parsed)
