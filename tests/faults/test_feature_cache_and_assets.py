"""The feature cache and the tiny-model assets under faults: two processes building one entry, an entry cut short,
a kill while the tiny models were built."""
import json
import logging
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from latentqa.data.features import FeatureSpec, load_features
from latentqa.training.build import resolve_model

BUILDER = """
import hashlib, json, sys
from transformers import AutoTokenizer
from latentqa.data.features import FeatureSpec, load_features
from latentqa.data.sources import load_examples
from latentqa.resources import SAMPLE_PATH
examples = load_examples(str(SAMPLE_PATH))[0][:24]
t5, encoder = (AutoTokenizer.from_pretrained(path) for path in sys.argv[1:3])
features = load_features(examples, FeatureSpec(lexical=True), question_tokenizer=t5, context_tokenizer=encoder,
                         cache_dir=sys.argv[3], progress=False)
print(hashlib.sha256(json.dumps(features.to_dict(), sort_keys=True).encode()).hexdigest())
"""


@pytest.mark.slow
def test_two_processes_build_one_feature_cache_entry(tiny_models, tmp_path):
    digests = set()
    for round_ in range(3):
        cache = tmp_path / f"cache-{round_}"
        processes = [subprocess.Popen([sys.executable, "-c", BUILDER, *map(str, tiny_models), str(cache)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for process in processes:
            out, err = process.communicate()
            assert process.returncode == 0, err[-2000:]
            digests.add(out.strip())
        assert [p.name for p in cache.iterdir()] == [next(cache.iterdir()).name]  # one entry, no temporary left
    assert len(digests) == 1


def _features(tiny_models, examples, cache):
    t5, encoder = (AutoTokenizer.from_pretrained(str(path)) for path in tiny_models)
    return load_features(examples, FeatureSpec(), question_tokenizer=t5, context_tokenizer=encoder, cache_dir=cache,
                         progress=False)


@pytest.mark.parametrize("damage", ["no arrow file", "cut arrow file", "bad json"])
def test_a_damaged_feature_cache_entry_is_rebuilt(tiny_models, sample_examples, tmp_path, damage, caplog):
    expected = _features(tiny_models, sample_examples[:4], tmp_path).to_dict()
    entry = next(tmp_path.iterdir())
    arrow = next(entry.glob("*.arrow"))
    if damage == "no arrow file":
        arrow.unlink()
    elif damage == "cut arrow file":
        arrow.write_bytes(arrow.read_bytes()[:100])
    else:
        (entry / "dataset_info.json").write_text("{")
    with caplog.at_level(logging.WARNING):
        again = _features(tiny_models, sample_examples[:4], tmp_path).to_dict()
    assert again == expected and "rebuilt" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _features(tiny_models, sample_examples[:4], tmp_path).to_dict() == expected
    assert "rebuilt" not in caplog.text  # the entry was written whole again


def test_tiny_models_cut_short_by_a_kill_are_built_again(tmp_path):
    folder = tmp_path / "tiny-models"
    (folder / "t5").mkdir(parents=True)
    (folder / "t5" / "config.json").write_text("")  # what a kill while saving left, before this version
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / f".tiny-models.tmp-{int(dead.stdout)}-00ff"  # a dead builder's temporary folder
    (leftover / "t5").mkdir(parents=True)
    t5 = resolve_model("tiny", str(tmp_path), "t5")
    assert json.loads((folder / "t5" / "config.json").read_text())["model_type"] == "t5"
    assert json.loads((folder / "encoder" / "config.json").read_text())["model_type"] == "distilbert"
    assert t5 == str(folder / "t5") and sorted(p.name for p in tmp_path.iterdir()) == ["tiny-models"]
