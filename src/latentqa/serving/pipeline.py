"""A saved reader that answers questions about given paragraphs, from Python (the HTTP server stands on it).

One code path with `latentqa predict`: queries become the same features (`data.features.encode_examples`), the
reader's own collator batches them, and `evaluation.predict.generate_batch` / `record_batch` generate, decode and
pick supporting facts by the same rule. A latent reader whose context states do not depend on the question reads
them through a `ContextStateCache` (`cache_mb`), so paragraphs a retriever returns again cost no encoder time.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ConfigError, EvalConfig
from ..data.examples import Example
from ..data.features import encode_examples
from ..evaluation.predict import Predictions, generate_batch, record_batch
from ..evaluation.run import MAX_ANSWER_TOKENS, MAX_QUESTION_TOKENS
from ..evaluation.sp_rule import effective_rule, rule_of
from ..readers.base import Reader
from ..readers.errors import ReaderFolderError
from ..readers.latent import LatentReader
from ..readers.loading import load_reader as load_reader_folder
from ..readers.state_cache import ContextStateCache
from .queries import Limits, RequestError, parse_query

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass
class Answer:
    id: str | None  # the caller's
    answer: str
    supporting_facts: list[tuple[str, int]]  # [] for the baseline reader
    sentence_scores: list[tuple[str, int, float]]  # (title, sent_id, score) of every sentence; [] for the baseline

    def to_json(self) -> dict:
        return {"id": self.id, "answer": self.answer,
                "supporting_facts": [list(fact) for fact in self.supporting_facts],
                "sentence_scores": [{"title": t, "sent_id": i, "score": s} for t, i, s in self.sentence_scores]}


@dataclass
class Prepared:
    """A checked query and its feature row, ready for a batch."""

    example: Example
    row: dict


class ReaderPipeline:
    """`answer(question, paragraphs)` and `answer_batch(queries)` over a loaded reader (see the module docstring).
    Not thread-safe: one model call at a time (the server runs them on one worker thread)."""

    def __init__(self, reader: Reader, *, cache_mb: float = 0, limits: Limits = Limits(), batch_size: int = 16,
                 window_packing: str | None = None):
        if window_packing is not None:  # a latent reader reads other windows than it was trained with
            if not isinstance(reader, LatentReader):
                raise ConfigError("window_packing: the baseline reader has no encoder windows")
            reader.config = dataclasses.replace(reader.config, window_packing=window_packing)
        self.reader = reader.eval()
        self.device = next(reader.parameters()).device
        self.limits, self.batch_size = limits, batch_size
        self.collate = reader.collator()
        # `prepare` runs on the server's event loop while the model thread decodes: a fast tokenizer is not safe
        # to share between threads (encoding with truncation changes its state), so queries get their own copies
        self.question_tokenizer = copy.deepcopy(reader.t5_tokenizer)
        self.context_tokenizer = copy.deepcopy(reader.context_tokenizer)
        self.cache_refusal = "the baseline reader has no context encoder"  # why states are not cached, or None
        if isinstance(reader, LatentReader):
            reader.freeze_encoder()  # serving trains nothing
            self.cache_refusal = reader.cache_refusal() or (None if cache_mb > 0 else "turned off (cache_mb 0)")
            if self.cache_refusal is None:
                reader.use_state_cache(ContextStateCache(max_mb=cache_mb))

    @property
    def state_cache(self) -> ContextStateCache | None:
        return getattr(self.reader, "state_cache", None)

    # --- from a query to a feature row -----------------------------------------------------------------------

    def prepare(self, query, field: str = "") -> Prepared:
        """Check a query (a dict, or an `Example`) and tokenize it; a RequestError names the field at fault."""
        example = query if isinstance(query, Example) else parse_query(query, self.limits, field)
        columns = encode_examples([example], question_tokenizer=self.question_tokenizer,
                                  context_tokenizer=self.context_tokenizer,
                                  max_question_tokens=MAX_QUESTION_TOKENS, max_answer_tokens=MAX_ANSWER_TOKENS,
                                  progress=False)
        row = {name: values[0] for name, values in columns.items()}
        tokens = len(row["context_ids"])
        if tokens > self.limits.max_context_tokens:
            raise RequestError(f"{field}paragraphs", f"the context is {tokens} tokens, over the limit of "
                                                     f"{self.limits.max_context_tokens}")
        return Prepared(example, row)

    # --- the model ---------------------------------------------------------------------------------------------

    def eval_config(self, *, sp_top_k: int | None = None, sp_threshold: float | None = None,
                    sp_paragraphs: int | None = None, sp_first: bool = False, max_new_tokens: int = 32,
                    num_beams: int = 1) -> EvalConfig:
        """The generation settings and the supporting-fact rule (the reader's saved one unless given)."""
        config = EvalConfig(batch_size=self.batch_size, num_beams=num_beams, max_new_tokens=max_new_tokens,
                            sp_top_k=sp_top_k, sp_threshold=sp_threshold, sp_paragraphs=sp_paragraphs,
                            sp_first=sp_first)
        return effective_rule(config, self.reader.sp_rule)

    @torch.no_grad()
    def run(self, prepared: list[Prepared], config: EvalConfig) -> list[Answer]:
        """Answer prepared queries, `batch_size` at a time; `config` from `eval_config`."""
        answers = []
        for start in range(0, len(prepared), self.batch_size):
            chunk = prepared[start:start + self.batch_size]
            # ids by position: callers' ids may repeat or be missing, predictions are keyed by id
            examples = [dataclasses.replace(p.example, id=str(i)) for i, p in enumerate(chunk)]
            batch = self.collate([{**p.row, "index": i} for i, p in enumerate(chunk)])
            batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
            generation = generate_batch(self.reader, batch, config)
            predictions = Predictions({}, {} if generation.sentence_scores is not None else None)
            record_batch(self.reader, examples, generation, config, predictions)
            for p, ex in zip(chunk, examples):
                keys = ex.sentence_keys()
                per_sentence = predictions.sentence_scores.get(ex.id, [])
                answers.append(Answer(
                    p.example.id, predictions.answers[ex.id],
                    [tuple(fact) for fact in (predictions.sp or {}).get(ex.id, [])],
                    [(title, i, round(score, 6)) for (title, i), score in zip(keys, per_sentence)]))
        return answers

    # --- the Python API ----------------------------------------------------------------------------------------

    def answer(self, question: str, paragraphs, *, id: str | None = None, **options) -> Answer:
        """Answer one question about `paragraphs`: a list of (title, [sentences]) or (title, text) pairs (or
        dicts with title and sentences / text). Options: sp_top_k, sp_threshold, sp_paragraphs, sp_first,
        max_new_tokens, num_beams."""
        query = {"question": question, "paragraphs": paragraphs, **({"id": id} if id is not None else {})}
        return self.answer_batch([query], **options)[0]

    def answer_batch(self, queries, **options) -> list[Answer]:
        """Answer many queries (dicts with question, paragraphs and an optional id), batched; options as in
        `answer`. A bad query raises RequestError naming it (`[3].paragraphs`) before anything runs."""
        prepared = [self.prepare(q, f"[{i}].") for i, q in enumerate(queries)]
        return self.run(prepared, self.eval_config(**options))

    def info(self) -> dict:
        """What is loaded: the reader's kind and settings, its size and device, and the state cache."""
        reader = self.reader
        cache, rule = self.state_cache, self.eval_config()
        return {
            "kind": reader.kind,
            "config": dataclasses.asdict(reader.config),
            "parameters": sum(p.numel() for p in reader.parameters()),
            "device": str(self.device),
            "sp_rule": rule_of(rule) if reader.kind == "latent" else None,
            "batch_size": self.batch_size,
            "limits": dataclasses.asdict(self.limits),
            "state_cache": {"enabled": True, **cache.stats()} if cache is not None else
            {"enabled": False, "why": self.cache_refusal},
        }


def resolve_reader_folder(name: str | Path) -> Path:
    """A reader folder on disk, or a Hugging Face Hub id (`owner/name`) fetched with `snapshot_download` (from
    the local Hub cache only when HF_HUB_OFFLINE=1)."""
    path = Path(name)
    if path.exists() or not HUB_ID.match(str(name)):
        return path  # load_reader names what is missing
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(str(name)))
    except Exception as err:  # offline, unknown repository, no network: one clear line either way
        hint = "HF_HUB_OFFLINE=1 and it is not in the local Hub cache" if constants.HF_HUB_OFFLINE else \
            "the Hub could not give it"
        raise ReaderFolderError(f"{name}: not a folder here, and as a Hub id {hint} "
                                f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None


def load_reader(path_or_hub_id: str | Path, device: str | torch.device = "cpu", *, cache_mb: float = 256,
                limits: Limits = Limits(), batch_size: int = 16, window_packing: str | None = None) -> ReaderPipeline:
    """A saved reader (a folder written by `latentqa train`, or a Hub id) ready to answer questions on `device`.
    `cache_mb`: memory for cached context states (0: off; readers whose states depend on the question never
    cache). `window_packing`: read the context in other windows than the reader was trained with ('paragraph'
    makes a repeated paragraph hit the cache in any company; answers then differ from the reader's own)."""
    reader = load_reader_folder(resolve_reader_folder(path_or_hub_id), device=device)
    return ReaderPipeline(reader, cache_mb=cache_mb, limits=limits, batch_size=batch_size,
                          window_packing=window_packing)
