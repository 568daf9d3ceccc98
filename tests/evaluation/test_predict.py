import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate import Accelerator
from torch.utils.data import DataLoader

from latentqa.config import EvalConfig, SpRule
from latentqa.data.features import load_features
from latentqa.evaluation.predict import validation_loss
from latentqa.evaluation.facts import select_facts
from latentqa.data.collate import IndexedRows


def _loader(reader, examples, batch_size, accelerator):
    features = load_features(examples, reader.features, question_tokenizer=reader.t5_tokenizer,
                             context_tokenizer=reader.context_tokenizer, cache_dir=None, progress=False)
    return accelerator.prepare(DataLoader(IndexedRows(features), batch_size=batch_size,
                                          collate_fn=reader.collator()))


@pytest.mark.parametrize("reader_name", ["tiny_latent", "tiny_baseline"])
def test_validation_loss_is_a_mean_over_examples_whatever_the_batch_size(reader_name, request, sample_examples):
    """5 examples in batches of 2 (the last holds one) and in one batch of 5: the same mean over examples."""
    reader = request.getfixturevalue(reader_name).eval()
    accelerator = Accelerator(cpu=True)
    examples = sample_examples[:5]
    by_two = validation_loss(reader, _loader(reader, examples, 2, accelerator), accelerator)
    whole = validation_loss(reader, _loader(reader, examples, 5, accelerator), accelerator)
    by_one = validation_loss(reader, _loader(reader, examples, 1, accelerator), accelerator)
    assert set(by_two) == set(whole) and "answer_loss" in whole
    for name in whole:
        assert math.isfinite(whole[name])
        assert by_two[name] == pytest.approx(whole[name], rel=1e-5), name
        assert by_one[name] == pytest.approx(whole[name], rel=1e-5), name


def test_select_facts_top_k_and_threshold(sample_examples):
    example = sample_examples[0]
    keys = example.sentence_keys()
    scores = [0.0] * len(keys)
    scores[3], scores[1], scores[5] = 0.5, 0.3, 0.2
    top = select_facts(example, scores, SpRule(top_k=2))
    assert top == [list(keys[1]), list(keys[3])]  # the two best, in context order
    assert select_facts(example, scores, SpRule(threshold=0.25)) == [list(keys[1]), list(keys[3])]
    assert select_facts(example, scores, SpRule(threshold=0.2)) == [list(keys[i]) for i in (1, 3, 5)]
    assert select_facts(example, scores, SpRule(threshold=0.9)) == [list(keys[3])]  # the best one always


def test_select_facts_by_paragraphs(sample_examples):
    example = next(ex for ex in sample_examples if len(ex.paragraphs) >= 3 and len(ex.paragraphs[1].sentences) >= 3)
    keys = example.sentence_keys()
    where = {key: i for i, key in enumerate(keys)}
    first, second, third = (p.title for p in example.paragraphs[:3])
    scores = [0.0] * len(keys)
    scores[where[first, 0]] = 0.9  # paragraph 1's best
    scores[where[second, 0]], scores[where[second, 1]], scores[where[second, 2]] = 0.1, 0.6, 0.4  # paragraph 2's
    scores[where[third, 0]] = 0.5  # paragraph 3's best is below paragraph 2's best
    chosen = select_facts(example, scores, SpRule(paragraphs=2))
    assert chosen == [[first, 0], [second, 1]]  # one sentence from each of the 2 best paragraphs
    assert select_facts(example, scores, SpRule(paragraphs=2, threshold=0.3)) == \
        [[first, 0], [second, 1], [second, 2]]  # their others over the threshold; paragraph 3's 0.5 stays out
    assert select_facts(example, scores, SpRule(paragraphs=1)) == [[first, 0]]
    assert select_facts(example, scores, SpRule(paragraphs=2, first=True)) == \
        [[first, 0], [second, 0], [second, 1]]  # and each one's first sentence


@pytest.mark.slow
def test_two_processes_gather_the_same_validation_loss_and_answers_as_one(tiny_models, tmp_path):
    """5 examples, batches of 2, 2 processes: the last batch is evened out with a repeated example, which
    `gather_for_metrics` must drop (with a plain gather the repeat counts and the mean moves)."""
    script = Path(__file__).with_name("validation_run.py")
    args = [str(tiny_models[0]), str(tiny_models[1])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(script), *args, str(tmp_path / "one.json")], check=True, env=env,
                   capture_output=True)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                             "29541", str(script), *args, str(tmp_path / "two.json")], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert set(one["losses"]) == set(two["losses"]) == {"loss", "answer_loss", "support_loss"}
    for name, value in one["losses"].items():
        assert two["losses"][name] == pytest.approx(value, rel=1e-5), name
    assert two["answers"] == one["answers"] and len(one["answers"]) == 5
