"""The Python API: the same answers as `latentqa predict`, with and without cached context states; Hub ids."""
import json
import re
import shutil
from pathlib import Path

import pytest

import latentqa
from latentqa.cli import main
from latentqa.config import EvalConfig
from latentqa.evaluation.run import predict_source
from latentqa.readers.base import READER_PATTERNS
from latentqa.readers.errors import ReaderFolderError
from latentqa.resources import SAMPLE_PATH
from latentqa.serving.queries import Limits, RequestError

from .conftest import as_query


@pytest.fixture(scope="module")
def predicted(served_reader_dir, sample_path, tmp_path_factory):
    """`latentqa predict` on the shipped sample, in batches of 16 answers of at most 8 tokens."""
    out = tmp_path_factory.mktemp("predict") / "pred.json"
    assert main(["predict", "--model", str(served_reader_dir), "--data", str(sample_path), "--out", str(out),
                 "--batch-size", "16", "--max-new-tokens", "8", "--cache-dir", str(out.parent / "cache")]) == 0
    return json.loads(out.read_text())


def test_answer_batch_equals_latentqa_predict_on_the_sample(served_reader_dir, sample_examples, predicted):
    reader = latentqa.load_reader(served_reader_dir, cache_mb=0, batch_size=16)
    answers = reader.answer_batch([as_query(ex) for ex in sample_examples], max_new_tokens=8)
    assert [a.id for a in answers] == [ex.id for ex in sample_examples]
    assert {a.id: a.answer for a in answers} == predicted["answer"]
    assert {a.id: [list(f) for f in a.supporting_facts] for a in answers} == predicted["sp"]
    assert len({a.answer for a in answers}) > 1 or len({tuple(a.supporting_facts) for a in answers}) > 1
    first = answers[0]
    assert [(t, i) for t, i, _ in first.sentence_scores] == sample_examples[0].sentence_keys()


def test_one_question_at_a_time_gives_the_same_as_predict(served_reader_dir, sample_examples, predicted):
    reader = latentqa.load_reader(served_reader_dir, cache_mb=0)
    for ex in sample_examples[:6]:
        answer = reader.answer(ex.question, [(p.title, list(p.sentences)) for p in ex.paragraphs], id=ex.id,
                               max_new_tokens=8)
        assert (answer.id, answer.answer) == (ex.id, predicted["answer"][ex.id])
        assert [list(f) for f in answer.supporting_facts] == predicted["sp"][ex.id]


def test_cached_states_give_the_same_answers(served_reader_dir, sample_examples):
    """Tolerance: the cache stores states in float16; sentence scores agree to 1e-3, answer texts exactly."""
    queries = [as_query(ex) for ex in sample_examples[:16]]
    plain = latentqa.load_reader(served_reader_dir, cache_mb=0).answer_batch(queries, max_new_tokens=8)
    cached_reader = latentqa.load_reader(served_reader_dir, cache_mb=64)
    cold = cached_reader.answer_batch(queries, max_new_tokens=8)
    misses = cached_reader.info()["state_cache"]["misses"]
    warm = cached_reader.answer_batch(queries, max_new_tokens=8)
    stats = cached_reader.info()["state_cache"]
    assert stats["enabled"] and stats["misses"] == misses and stats["hits"] >= misses  # the second pass: all hits
    for a, b, c in zip(plain, cold, warm):
        assert a.answer == b.answer == c.answer
        assert b.sentence_scores == c.sentence_scores
        assert max(abs(x[2] - y[2]) for x, y in zip(a.sentence_scores, b.sentence_scores)) < 1e-3


def test_a_bad_query_names_it_before_anything_runs(served_reader_dir, sample_examples):
    reader = latentqa.load_reader(served_reader_dir, limits=Limits(max_context_tokens=100))
    with pytest.raises(RequestError) as caught:
        reader.answer_batch([{"question": "q", "paragraphs": [["t", ["short."]]]}, as_query(sample_examples[0])])
    assert caught.value.field == "[1].paragraphs" and "tokens, over the limit of 100" in caught.value.message
    with pytest.raises(RequestError, match="question"):
        reader.answer("", [("t", ["s."])])


def test_a_question_dependent_reader_is_served_without_the_cache(tiny_models, tmp_path):
    from latentqa.readers.latent import LatentConfig, LatentReader

    t5_dir, encoder_dir = tiny_models
    folder = LatentReader.build(str(t5_dir), str(encoder_dir), LatentConfig(
        num_latents=4, selector_heads=4, question_conditioning="encoder")).save_pretrained(tmp_path / "reader")
    reader = latentqa.load_reader(folder, cache_mb=64)
    cache = reader.info()["state_cache"]
    assert not cache["enabled"] and "depend on the question" in cache["why"]
    assert reader.answer("Who?", [("A", "Alice went home. Bob stayed.")], max_new_tokens=2).supporting_facts


def test_a_hub_id_loads_from_the_local_hub_cache_offline(served_reader_dir, monkeypatch, tmp_path):
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--someone--tiny-reader" / "snapshots" / ("0" * 40)
    shutil.copytree(served_reader_dir, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    reader = latentqa.load_reader("someone/tiny-reader")
    assert reader.info()["kind"] == "latent"
    with pytest.raises(ReaderFolderError, match="someone/missing: not a folder here.*HF_HUB_OFFLINE=1"):
        latentqa.load_reader("someone/missing")
    with pytest.raises(FileNotFoundError, match="not a reader folder"):
        latentqa.load_reader(tmp_path)


def test_the_files_fetched_from_the_hub_are_the_reader_and_suffice(served_reader_dir, tmp_path):
    from huggingface_hub.utils import filter_repo_objects

    repo = tmp_path / "repo"
    shutil.copytree(served_reader_dir, repo)
    for extra in ("checkpoints/step-4/optimizer.pt", "pytorch_model.bin", "README.md", "notes.txt"):
        (repo / extra).parent.mkdir(parents=True, exist_ok=True)
        (repo / extra).write_text("not the reader")
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
    fetched = list(filter_repo_objects(files, allow_patterns=list(READER_PATTERNS)))  # the Hub client's own filter
    assert set(files) - set(fetched) == {"checkpoints/step-4/optimizer.pt", "pytorch_model.bin", "README.md",
                                         "notes.txt"}
    only = tmp_path / "fetched"
    for name in fetched:
        (only / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / name, only / name)
    assert latentqa.load_reader(only).info()["kind"] == "latent"


def test_the_readme_snippet_runs(served_reader_dir, capsys):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    snippet = re.search(r"## Serve.*?```python\n(.*?)```", readme, re.S).group(1)
    assert '"runs/tiny-latent/best"' in snippet
    exec(compile(snippet.replace("runs/tiny-latent/best", str(served_reader_dir)), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "('Oasis', " in printed or "('Blur', " in printed  # supporting facts from the given paragraphs


def test_the_baseline_reader_answers_without_facts_or_cache(tiny_baseline, sample_examples, tmp_path):
    folder = tiny_baseline.save_pretrained(tmp_path / "baseline")
    reader = latentqa.load_reader(folder, cache_mb=64)
    answer = reader.answer(sample_examples[0].question, [(p.title, list(p.sentences))
                                                         for p in sample_examples[0].paragraphs], max_new_tokens=3)
    _, _, _, by_predict = predict_source(str(folder), str(SAMPLE_PATH), EvalConfig(max_new_tokens=3), limit=1,
                                         cache_dir=None)
    assert answer.answer == by_predict.answers[sample_examples[0].id]  # the same path as `latentqa predict`
    assert answer.supporting_facts == [] and answer.sentence_scores == []
    info = reader.info()
    assert info["kind"] == "baseline" and info["sp_rule"] is None
    assert not info["state_cache"]["enabled"] and "baseline" in info["state_cache"]["why"]


def test_paragraph_windows_make_a_paragraph_hit_in_any_order(served_reader_dir, sample_examples):
    query = as_query(sample_examples[3])
    reordered = {**query, "paragraphs": query["paragraphs"][::-1]}
    for packing, hits_all in (("greedy", False), ("paragraph", True)):
        reader = latentqa.load_reader(served_reader_dir, cache_mb=64, window_packing=packing)
        assert reader.info()["window_packing"] == packing
        reader.answer_batch([query], max_new_tokens=2)
        misses = reader.info()["state_cache"]["misses"]
        reader.answer_batch([reordered], max_new_tokens=2)
        assert (reader.info()["state_cache"]["misses"] == misses) == hits_all, packing
    with pytest.raises(ValueError, match="window_packing"):
        latentqa.load_reader(served_reader_dir, window_packing="pages")


def test_serving_uses_the_reader_as_given(served_reader_dir, sample_examples):
    """Caching states and reading other windows need no change to the reader: its config, feature spec,
    parameters (values and requires_grad) are as loaded after answering."""
    import copy

    import torch

    from latentqa.readers.loading import load_reader_folder as load_folder
    from latentqa.serving.pipeline import ReaderPipeline

    reader = load_folder(served_reader_dir)
    config, features = copy.deepcopy(reader.config), reader.features
    weights = {name: p.detach().clone() for name, p in reader.named_parameters()}
    trainable = {name: p.requires_grad for name, p in reader.named_parameters()}
    pipeline = ReaderPipeline(reader, cache_mb=64, window_packing="paragraph")
    first = pipeline.answer_batch([as_query(ex) for ex in sample_examples[:2]], max_new_tokens=2)
    again = pipeline.answer_batch([as_query(ex) for ex in sample_examples[:2]], max_new_tokens=2)
    assert pipeline.info()["state_cache"]["hits"] > 0 and first == again  # the cache served the second round
    assert reader.config == config and reader.features == features
    assert {name: p.requires_grad for name, p in reader.named_parameters()} == trainable
    assert all(torch.equal(p, weights[name]) for name, p in reader.named_parameters())
