import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate import Accelerator
from torch.utils.data import DataLoader

from latentqa.data.features import load_features
from latentqa.evaluation.predict import validation_loss
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
