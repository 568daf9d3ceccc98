"""The embedded long-context task: one new fact hidden somewhere in a real HotpotQA context.

Each instance takes a real distractor context, inserts the sentence `The code word of {entity} is {answer}.` into
one of its paragraphs at a seeded target position spread over the whole context (most of it past token 512),
and asks `What is the code word of {entity}?`. The inserted sentence is the one supporting fact. Answers come
from a closed set of words, so a tiny model can learn them and chance is 1 / len(ANSWERS). Train, validation and
test use different source contexts. The many-facts variant (`facts` > 1) inserts facts about several entities
into each context, the question naming one: a question-blind bottleneck must carry all of them to the decoder, a
question-aware one only the asked one. Positions are measured in context tokens of a given tokenizer (the demo
uses distilbert-base-uncased's WordPiece vocabulary, as the data stats do).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..data.examples import Example, Paragraph
from ..data.features import format_sentence

ANSWERS = ("amber", "cobalt", "crimson", "emerald", "indigo", "ivory", "jade", "scarlet")
ENTITIES = ("the Alder project", "the Birch project", "the Cedar project", "the Dune project",
            "the Elm project", "the Fern project", "the Gorse project", "the Hazel project")
SPLITS = {"train": 35, "validation": 6, "test": 12}  # source contexts per split (53 in the shipped sample)


def fact_sentence(entity: str, answer: str) -> str:
    return f"The code word of {entity} is {answer}."


def question(entity: str) -> str:
    return f"What is the code word of {entity}?"


def insert_fact(example: Example, target: int, entity: str, answer: str, tokenizer, new_id: str) -> tuple[Example, int]:
    """Insert the fact at the sentence boundary closest to token `target`; returns the instance and the token
    position where the fact sentence starts."""
    lengths = [len(ids) for ids in tokenizer(
        [format_sentence(p.title, s) for p in example.paragraphs for s in p.sentences],
        add_special_tokens=False, verbose=False)["input_ids"]]
    starts = np.concatenate([[0], np.cumsum(lengths)])  # token position of every sentence boundary
    boundary = int(np.abs(starts - target).argmin())  # insert before sentence `boundary` (or at the very end)
    keys = example.sentence_keys()
    if boundary < len(keys):
        title, sent_id = keys[boundary]
    else:
        title, sent_id = keys[-1][0], keys[-1][1] + 1
    paragraphs = tuple(
        Paragraph(p.title, p.sentences[:sent_id] + (" " + fact_sentence(entity, answer),) + p.sentences[sent_id:])
        if p.title == title else p for p in example.paragraphs)
    instance = dataclasses.replace(example, id=new_id, question=question(entity), answer=answer,
                                   paragraphs=paragraphs, supporting_facts=((title, sent_id),), type="fact",
                                   level="embedded")
    return instance, int(starts[boundary])


def build_task(examples: list[Example], tokenizer, *, seed: int = 0, per_context: dict[str, int] | None = None,
               facts: int = 1):
    """{split: [(instance, fact token position)]}, deterministic for a seed. Contexts with duplicate titles
    (which would make a (title, sent_id) fact ambiguous) are skipped. With `facts` > 1, each instance also holds
    facts - 1 others about other entities, at random places: only the question tells which one is asked."""
    if not 1 <= facts <= len(ENTITIES):
        raise ValueError(f"facts per context must be 1 to {len(ENTITIES)} (one per entity), got {facts}")
    per_context = per_context or {"train": 16, "validation": 4, "test": 8}
    usable = [ex for ex in examples if len({p.title for p in ex.paragraphs}) == len(ex.paragraphs)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(usable))
    task, start = {}, 0
    for split, count in SPLITS.items():
        contexts = [usable[i] for i in order[start:start + count]]
        start += count
        task[split] = []
        for ex in contexts:
            length = sum(len(ids) for ids in tokenizer(
                [format_sentence(p.title, s) for p in ex.paragraphs for s in p.sentences],
                add_special_tokens=False, verbose=False)["input_ids"])
            for k in range(per_context[split]):
                # Evenly spread targets with jitter: every part of every context is used.
                target = int((k + rng.uniform()) / per_context[split] * length)
                if facts == 1:
                    task[split].append(insert_fact(ex, target, ENTITIES[rng.integers(len(ENTITIES))],
                                                   ANSWERS[rng.integers(len(ANSWERS))], tokenizer, f"{ex.id}-fact{k}"))
                else:
                    task[split].append(insert_facts(ex, target, facts, rng, tokenizer, f"{ex.id}-fact{k}", length))
    return task


def insert_facts(example: Example, target: int, facts: int, rng, tokenizer, new_id: str, length: int):
    """`facts` facts about distinct entities; the asked one (at `target`) goes in last, so its position and
    (title, sent_id) are those of the final context."""
    entities = [ENTITIES[i] for i in rng.permutation(len(ENTITIES))[:facts]]
    answers = [ANSWERS[i] for i in rng.integers(len(ANSWERS), size=facts)]
    for entity, answer in zip(entities[1:], answers[1:]):
        example, _ = insert_fact(example, int(rng.uniform() * length), entity, answer, tokenizer, new_id)
    return insert_fact(example, target, entities[0], answers[0], tokenizer, new_id)


def write_task(task, out_dir: str | Path) -> dict[str, Path]:
    """Each split as an official HotpotQA JSON file, plus positions.json (id → fact token position)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, items in task.items():
        records = [{"_id": ex.id, "question": ex.question, "answer": ex.answer, "type": ex.type, "level": ex.level,
                    "supporting_facts": [list(f) for f in ex.supporting_facts],
                    "context": [[p.title, list(p.sentences)] for p in ex.paragraphs]} for ex, _ in items]
        files[split] = out / f"{split}.json"
        files[split].write_text(json.dumps(records))
    positions = {ex.id: pos for items in task.values() for ex, pos in items}
    (out / "positions.json").write_text(json.dumps(positions, indent=0))
    return files
