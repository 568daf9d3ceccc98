"""A saved reader that answers questions about given paragraphs, from Python (the HTTP server stands on it).

One code path with `latentqa predict`: queries become the same features (`data.features.encode_examples`), the
reader's own collator batches them, and `evaluation.predict.generate_batch` / `decode_batch` generate, decode and
pick supporting facts by the same rule. A latent reader whose context states do not depend on the question reads
them through a `ContextStateCache` (`cache_mb`), so paragraphs a retriever returns again cost no encoder time.

With an index (`latentqa index`), a query may leave out its paragraphs: the index retrieves them
(`index.retrieval`) and the reader reads their stored states (`index.store.IndexStates`); only the question goes
through the encoder. The answer names the retrieved paragraphs and their scores.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import CACHE_MB, EvalConfig, SpRule, TOP_K
from ..data.examples import Example
from ..data.features import encode_examples
from ..evaluation.predict import check_generation, decode_batch, generate_batch
from ..index.build import check_reader
from ..index.retrieval import Hit, RetrievalConfig, Retriever
from ..index.store import IndexStates, IndexStore
from ..progress import progress_bar
from ..readers.base import READER_PATTERNS, Reader
from ..readers.errors import ReaderFolderError
from ..readers.loading import load_reader_folder
from ..readers.state_cache import ContextStateCache
from .queries import Limits, RequestError, parse_latents, parse_query

log = logging.getLogger(__name__)
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass
class Answer:
    id: str | None  # the caller's
    answer: str
    supporting_facts: list[tuple[str, int]]  # [] for the baseline reader
    sentence_scores: list[tuple[str, int, float]]  # (title, sent_id, score) of every sentence; [] for the baseline
    retrieved: list[Hit] | None = None  # the paragraphs the index gave, best first (None: the query brought them)

    def to_json(self) -> dict:
        return {"id": self.id, "answer": self.answer,
                "supporting_facts": [list(fact) for fact in self.supporting_facts],
                "sentence_scores": [{"title": t, "sent_id": i, "score": s} for t, i, s in self.sentence_scores],
                **({"retrieved": [{"title": h.title, "score": h.score} for h in self.retrieved]}
                   if self.retrieved is not None else {})}


@dataclass
class Prepared:
    """A checked query and its feature row, ready for a batch."""

    example: Example
    row: dict
    retrieved: list[Hit] | None = None
    latents: int | None = None  # the query's own number of latents to read (None: the generation settings')


class ReaderPipeline:
    """`answer(question, paragraphs)` and `answer_batch(queries)` over a loaded reader (see the module docstring),
    used as given: its config, parameters and feature spec are never changed. Not thread-safe: one model call at
    a time (the server runs them on one worker thread). `index`: an index folder to retrieve from and read
    stored states of, `top_k` paragraphs a question (see the module docstring)."""

    def __init__(self, reader: Reader, *, cache_mb: float = 0, limits: Limits = Limits(), batch_size: int = 16,
                 window_packing: str | None = None, index: str | Path | None = None, top_k: int = TOP_K,
                 retrieval: RetrievalConfig = RetrievalConfig()):
        if reader.training:
            raise ValueError("the pipeline answers with a reader in eval mode (load_reader gives one)")
        self.reader = reader
        self.device = next(reader.parameters()).device
        self.limits, self.batch_size = limits, batch_size
        self.collate = reader.collator(packing=window_packing)
        if window_packing is not None:
            log.info("reading the context in %r windows instead of the reader's own", window_packing)
        # `prepare` runs on the server's tokenizing thread while the model thread decodes: a fast tokenizer is not
        # safe to share between threads (encoding with truncation changes its state), so queries get their own copies
        self.question_tokenizer = copy.deepcopy(reader.t5_tokenizer)
        self.context_tokenizer = copy.deepcopy(reader.context_tokenizer)
        # why context states are not cached, or None
        self.cache_refusal = reader.cache_refusal(inference=True) or (None if cache_mb > 0 else
                                                                      "turned off (cache_mb 0)")
        self.state_cache = ContextStateCache(max_mb=cache_mb) if self.cache_refusal is None else None
        self.retriever, self.top_k = None, top_k
        if index is not None:
            if window_packing is not None:
                raise ValueError("an index holds the states of the reader's own windows: no window_packing with it")
            if not 1 <= top_k <= limits.max_paragraphs:
                raise ValueError(f"top_k must be between 1 and {limits.max_paragraphs}, got {top_k}")
            store = IndexStore(index)
            check_reader(store.header, reader, store.directory)
            self.retriever = Retriever(store, retrieval)
            reader.use_state_cache(IndexStates(store, fallback=self.state_cache), inference=True)
        elif self.state_cache is not None:
            reader.use_state_cache(self.state_cache, inference=True)

    # --- from a query to a feature row -----------------------------------------------------------------------

    def prepare(self, query, field: str = "") -> Prepared:
        """Check a query (a dict, or an `Example`) and tokenize it as the reader was trained; a RequestError names
        the field at fault."""
        example = query if isinstance(query, Example) else \
            parse_query(query, self.limits, field, paragraphs_optional=self.retriever is not None)
        latents = parse_latents(query, field)
        refusal = self.reader.latent_refusal(latents)
        if refusal:
            raise RequestError(f"{field}latents", refusal)
        retrieved = None
        if not example.paragraphs:
            if self.retriever is None:
                raise RequestError(f"{field}paragraphs", "missing (no index to retrieve them from)")
            retrieved = self.retrieve(example.question)
            example = dataclasses.replace(example, paragraphs=tuple(self.retriever.store.paragraphs[h.row]
                                                                    for h in retrieved))
        columns = encode_examples([example], self.reader.features, question_tokenizer=self.question_tokenizer,
                                  context_tokenizer=self.context_tokenizer, progress=False)
        row = {name: values[0] for name, values in columns.items()}
        tokens = len(row["context_ids"])
        if tokens > self.limits.max_context_tokens:
            raise RequestError(f"{field}paragraphs", f"the context is {tokens} tokens, over the limit of "
                                                     f"{self.limits.max_context_tokens}")
        return Prepared(example, row, retrieved, latents)

    def retrieve(self, question: str, k: int | None = None) -> list[Hit]:
        """The index's `k` (default `top_k`) best paragraphs for `question`; the question goes through the
        reader's encoder, [CLS] question [SEP] as the reader reads it, for the dense side."""
        if self.retriever is None:
            raise ValueError("no index: load the reader with index=DIR")
        return self.retriever.search(question, self.question_vector(question), k or self.top_k)

    @torch.no_grad()
    def question_vector(self, question: str):
        """The encoder's mean state of [CLS] question [SEP], at unit length, as a NumPy vector."""
        tok = self.context_tokenizer
        ids = tok(question.strip(), add_special_tokens=False, truncation=True,
                  max_length=self.reader.features.max_question_tokens - 1)["input_ids"]
        ids = torch.tensor([[tok.cls_token_id, *ids, tok.sep_token_id]], device=self.device)
        states = self.reader.encoder(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        return torch.nn.functional.normalize(states[0].float().mean(dim=0), dim=0).cpu().numpy()

    # --- the model ---------------------------------------------------------------------------------------------

    def generation(self, *, max_new_tokens: int = 32, num_beams: int = 1, mask_latents: bool = False,
                   latents: int | None = None) -> EvalConfig:
        """Generation settings for `run`, refused here (a ConfigError naming the setting) if the reader cannot
        follow them."""
        config = EvalConfig(batch_size=self.batch_size, num_beams=num_beams, max_new_tokens=max_new_tokens,
                            mask_latents=mask_latents, latents=latents)
        check_generation(self.reader, config)
        return config

    def rule(self, rule: SpRule = SpRule()) -> SpRule:
        """The supporting-fact rule answers follow: `rule` where it says something, else the reader's saved one."""
        return rule.or_saved(self.reader.sp_rule)

    @torch.no_grad()
    def run(self, prepared: list[Prepared], generation: EvalConfig, rule: SpRule) -> list[Answer]:
        """Answer prepared queries, `batch_size` at a time (`generation` from `generation()`, `rule` from
        `rule()`)."""
        answers = []
        for start in range(0, len(prepared), self.batch_size):
            chunk = prepared[start:start + self.batch_size]
            batch = self.collate([{**p.row, "index": i} for i, p in enumerate(chunk)])
            batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
            examples = [p.example for p in chunk]
            decoded = decode_batch(self.reader, examples, generate_batch(self.reader, batch, generation,
                                                                         self.latents_per_query(chunk, generation)),
                                   rule)
            for p, item in zip(chunk, decoded):
                keys = p.example.sentence_keys()
                answers.append(Answer(p.example.id, item.answer, [tuple(fact) for fact in item.facts or []],
                                      [(title, i, round(score, 6))
                                       for (title, i), score in zip(keys, item.sentence_scores or [])],
                                      p.retrieved))
        return answers

    def latents_per_query(self, chunk: list[Prepared], generation: EvalConfig) -> torch.Tensor | None:
        """Each query's number of latents (B,) where some query names its own (None: the settings' for all): one
        batch may mix them, and each query gets the answer it gets alone."""
        if all(p.latents is None for p in chunk):
            return None
        default = generation.latents or self.reader.config.num_latents
        return torch.tensor([p.latents or default for p in chunk])  # on the host: the reader reads it there

    # --- the Python API ----------------------------------------------------------------------------------------

    def answer(self, question: str, paragraphs=None, *, id: str | None = None, **options) -> Answer:
        """Answer one question about `paragraphs`: a list of (title, [sentences]) or (title, text) pairs (or
        dicts with title and sentences / text); None: the index's (`index`). Options: sp_rule (an `SpRule`),
        max_new_tokens, num_beams, mask_latents, latents (answer from the first K latents: a count the reader was
        trained for, `latent.nested_latents`)."""
        query = {"question": question, **({"paragraphs": paragraphs} if paragraphs is not None else {}),
                 **({"id": id} if id is not None else {})}
        return self.answer_batch([query], **options)[0]

    def answer_batch(self, queries, *, sp_rule: SpRule = SpRule(), **generation) -> list[Answer]:
        """Answer many queries (dicts with question, paragraphs and an optional id), batched; options as in
        `answer`. A bad query raises RequestError naming it (`[3].paragraphs`) before anything runs."""
        prepared = [self.prepare(q, f"[{i}].") for i, q in enumerate(queries)]
        return self.run(prepared, self.generation(**generation), self.rule(sp_rule))

    def answer_from_index(self, examples: list[Example], generation: EvalConfig, rule: SpRule,
                          progress: bool = True) -> list[Answer]:
        """The open setting (`predict --index`): each example's question alone, its paragraphs retrieved from the
        index, `batch_size` at a time; questions are read as in training (cut to the reader's question length)."""
        answers = []
        for start in progress_bar(range(0, len(examples), self.batch_size), desc="predict", unit="batch",
                                  disable=not progress):
            chunk = examples[start:start + self.batch_size]
            prepared = [self.prepare(Example(id=ex.id, question=ex.question, paragraphs=())) for ex in chunk]
            answers += self.run(prepared, generation, rule)
        return answers

    def info(self) -> dict:
        """What is loaded: the reader's kind, settings and feature spec, its size and device, and the state cache."""
        reader, cache = self.reader, self.state_cache
        return {
            "kind": reader.kind,
            "config": dataclasses.asdict(reader.config),
            "features": reader.features.to_dict(),
            "parameters": sum(p.numel() for p in reader.parameters()),
            "device": str(self.device),
            "sp_rule": self.rule().to_dict() if reader.predicts_facts else None,
            "window_packing": self.collate.packing,  # the encoder windows it reads (None: no encoder)
            "batch_size": self.batch_size,
            "limits": dataclasses.asdict(self.limits),
            "state_cache": {"enabled": True, **cache.stats()} if cache is not None else
            {"enabled": False, "why": self.cache_refusal},
            **({"index": {"folder": str(self.retriever.store.directory), "paragraphs": len(self.retriever.store),
                          "top_k": self.top_k, "retrieval": dataclasses.asdict(self.retriever.config),
                          **self.reader.state_cache.stats()}} if self.retriever is not None else {}),
        }


def resolve_reader_folder(name: str | Path) -> Path:
    """A reader folder on disk, or a Hugging Face Hub id (`owner/name`) fetched with `snapshot_download` (from
    the local Hub cache only when HF_HUB_OFFLINE=1): the reader's own files only, not a repository's checkpoints
    or other formats."""
    path = Path(name)
    if path.exists() or not HUB_ID.match(str(name)):
        return path  # load_reader names what is missing
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(str(name), allow_patterns=list(READER_PATTERNS)))
    except Exception as err:  # offline, unknown repository, no network: one clear line either way
        hint = "HF_HUB_OFFLINE=1 and it is not in the local Hub cache" if constants.HF_HUB_OFFLINE else \
            "the Hub could not give it"
        raise ReaderFolderError(f"{name}: not a folder here, and as a Hub id {hint} "
                                f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None


def load_reader(path_or_hub_id: str | Path, device: str | torch.device = "cpu", *, cache_mb: float = CACHE_MB,
                limits: Limits = Limits(), batch_size: int = 16, window_packing: str | None = None,
                index: str | Path | None = None, top_k: int = TOP_K) -> ReaderPipeline:
    """A saved reader (a folder written by `latentqa train`, or a Hub id) ready to answer questions on `device`.
    `cache_mb`: memory for cached context states (0: off; readers whose states depend on the question never
    cache). `window_packing`: read the context in other windows than the reader was trained with ('paragraph'
    makes a repeated paragraph hit the cache in any company; answers then differ from the reader's own).
    `index`: an index folder (`latentqa index`) to answer questions without paragraphs from, `top_k` a question."""
    reader = load_reader_folder(resolve_reader_folder(path_or_hub_id), device=device)
    return ReaderPipeline(reader, cache_mb=cache_mb, limits=limits, batch_size=batch_size,
                          window_packing=window_packing, index=index, top_k=top_k)
