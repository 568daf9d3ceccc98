import json

import numpy as np
import pytest

from latentqa.assets import pretrained_encoder_path
from latentqa.data.features import FeatureSpec, encode_examples
from latentqa.data.sources import load_examples
from latentqa.demo.task import ANSWERS, build_task, write_task


@pytest.fixture(scope="module")
def ruler():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(pretrained_encoder_path())


@pytest.fixture(scope="module")
def task(sample_examples, ruler):
    return build_task(sample_examples, ruler, seed=3, per_context={"train": 4, "validation": 2, "test": 3})


def test_task_is_deterministic(sample_examples, ruler, task):
    again = build_task(sample_examples, ruler, seed=3, per_context={"train": 4, "validation": 2, "test": 3})
    assert again == task
    other = build_task(sample_examples, ruler, seed=4, per_context={"train": 4, "validation": 2, "test": 3})
    assert other != task


def test_facts_sit_where_the_task_says(task, ruler):
    for split, items in task.items():
        examples = [ex for ex, _ in items]
        cols = encode_examples(examples, FeatureSpec(max_answer_tokens=16), question_tokenizer=ruler,
                               context_tokenizer=ruler, progress=False)
        for (ex, position), support, span, ids in zip(items, cols["support"], cols["answer_span"], cols["context_ids"]):
            support, span = np.asarray(support, dtype=bool), np.asarray(span, dtype=bool)
            assert int(np.flatnonzero(support)[0]) == position, ex.id  # verified in tokens
            fact = ruler.decode(np.asarray(ids)[support].tolist())
            assert fact.endswith(f"the code word of {ex.question.split('of ', 1)[1][:-1].lower()} is {ex.answer}.")
            # the answer span is the code word, inside the fact (or also in its title, where a title holds it)
            assert (span <= support).all() and ruler.decode(np.asarray(ids)[span].tolist()).split()[-1] == ex.answer
            assert ex.answer in ANSWERS and len(ex.supporting_facts) == 1


def test_facts_spread_over_the_whole_context_and_splits_use_different_contexts(task):
    positions = np.array([p for items in task.values() for _, p in items])
    assert (positions >= 512).mean() > 0.5 and positions.max() > 2000 and positions.min() < 256
    sources = {split: {ex.id.rsplit("-fact", 1)[0] for ex, _ in items} for split, items in task.items()}
    assert not (sources["train"] & sources["test"]) and not (sources["train"] & sources["validation"])
    assert not (sources["validation"] & sources["test"])
    assert {len(s) for s in sources.values()} == {35, 6, 12}


def test_task_files_are_official_hotpotqa_json(task, tmp_path):
    files = write_task(task, tmp_path)
    loaded, report = load_examples(str(files["test"]))
    assert loaded == [ex for ex, _ in task["test"]] and not report.warnings
    positions = json.loads((tmp_path / "positions.json").read_text())
    assert positions == {ex.id: p for items in task.values() for ex, p in items}


def test_fact_in_input_follows_the_baselines_own_cut(tiny_baseline, sample_examples):
    """Counted in the baseline's T5 tokens: a fact at the start of the context is inside its 128-token input,
    one at the end is not, and a cut that ends inside the fact sentence leaves it out."""
    from latentqa.demo.run import fact_in_input
    from latentqa.demo.task import insert_fact
    from tests.conftest import collate

    tok, base = tiny_baseline.t5_tokenizer, sample_examples[0]
    first, _ = insert_fact(base, 0, "the Elm project", "jade", tok, "first")
    last, _ = insert_fact(base, 10 ** 6, "the Elm project", "jade", tok, "last")
    batch, features = collate(tiny_baseline, [first, last])
    assert fact_in_input([first, last], features, tiny_baseline.collator()) == {"first": True, "last": False}
    fact_end = int(np.flatnonzero(features["support"][0])[-1]) + 1
    kept = batch["context_kept"][0].item()
    tiny_baseline.config.max_input_tokens -= kept - fact_end + 1  # now the cut ends one token before the fact does
    assert fact_in_input([first], features.select([0]), tiny_baseline.collator()) == {"first": False}


def test_many_facts_task_names_one_of_several_entities(sample_examples, ruler):
    from latentqa.demo.task import ENTITIES

    task = build_task(sample_examples, ruler, seed=1, per_context={"train": 2, "validation": 1, "test": 2}, facts=4)
    for items in task.values():
        for ex, position in items:
            sentences = [s.strip() for p in ex.paragraphs for s in p.sentences]
            facts = [s for s in sentences if s.startswith("The code word of ")]
            named = {entity for entity in ENTITIES for s in facts if f"of {entity} is" in s}
            assert len(facts) == 4 and len(named) == 4  # four facts, four different entities
            (title, sent_id), = ex.supporting_facts
            asked = {p.title: p.sentences for p in ex.paragraphs}[title][sent_id].strip()
            assert asked == f"The code word of {ex.question[len('What is the code word of '):-1]} is {ex.answer}."
    cols = encode_examples([ex for ex, _ in task["test"]], FeatureSpec(max_answer_tokens=16), question_tokenizer=ruler,
                           context_tokenizer=ruler, progress=False)
    for (ex, position), support in zip(task["test"], cols["support"]):
        assert int(np.flatnonzero(support)[0]) == position
