"""A reader trained with nested latents answers from the first K of them in every consumer: predict, eval, ask, the
Python API; the folder records the counts it was trained for and each consumer refuses another in one line."""
import json

import pytest

import latentqa
from latentqa.cli import main
from latentqa.data.sources import load_examples
from latentqa.training.config import load_config
from latentqa.training.trainer import train

from .serving.conftest import as_query


@pytest.fixture(scope="module")
def nested_run(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("nested")
    t5_dir, encoder_dir = tiny_models
    return train(load_config(None, [
        f"model.t5={t5_dir}", f"model.encoder={encoder_dir}", "latent.num_latents=4", "latent.nested_latents=[2,4]",
        "latent.selector_heads=4", "latent.question_conditioning=latents", "latent.window_packing=sentence",
        "latent.gate_init=1.0", "data.train_limit=8", "data.validation_limit=4", f"data.cache_dir={out / 'cache'}",
        f"train.output_dir={out / 'run'}", "train.epochs=1", "train.batch_size=4", "eval.max_new_tokens=4"]))


def test_every_consumer_reads_the_asked_count_and_refuses_others(nested_run, sample_path, tmp_path, capsys):
    folder = nested_run / "best"
    assert json.loads((folder / "reader.json").read_text())["config"]["nested_latents"] == [2, 4]
    flags = ["--model", str(folder), "--data", str(sample_path), "--limit", "4", "--cache-dir", str(tmp_path),
             "--max-new-tokens", "4"]
    for k in (2, 4):
        assert main(["predict", *flags, "--latents", str(k), "--out", str(tmp_path / f"k{k}.json")]) == 0
    predicted = {k: json.loads((tmp_path / f"k{k}.json").read_text()) for k in (2, 4)}
    examples = load_examples(str(sample_path), limit=4)[0]
    pipeline = latentqa.load_reader(folder, cache_mb=0)
    from_python = [a.answer for a in pipeline.answer_batch([as_query(ex) for ex in examples], latents=2,
                                                           max_new_tokens=4)]
    assert from_python == [predicted[2]["answer"][ex.id] for ex in examples]
    assert predicted[2]["sp"] != predicted[4]["sp"] or predicted[2]["answer"] != predicted[4]["answer"]

    capsys.readouterr()
    assert main(["eval", *flags, "--latents", "3", "--out-dir", str(tmp_path / "eval")]) != 0
    assert capsys.readouterr().err.strip().endswith("latents: this reader was trained to read 2 or 4 latents, got 3")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"title": p.title, "sentences": list(p.sentences)}) + "\n"
                              for ex in examples for p in ex.paragraphs))
    assert main(["index", "--model", str(folder), "--data", str(corpus), "--out", str(tmp_path / "i")]) == 0
    ask = ["ask", "--index", str(tmp_path / "i"), "--top-k", "3", "--json", examples[0].question]
    capsys.readouterr()
    assert main([*ask, "--latents", "2"]) == 0
    indexed = latentqa.load_reader(folder, cache_mb=0, index=tmp_path / "i", top_k=3)
    assert json.loads(capsys.readouterr().out)["answer"] == indexed.answer(examples[0].question, latents=2).answer
    assert main([*ask, "--latents", "3"]) != 0
    assert capsys.readouterr().err.strip().endswith("latents: this reader was trained to read 2 or 4 latents, got 3")
    with pytest.raises(ValueError, match="latents: this reader was trained to read 2 or 4 latents, got 1"):
        pipeline.answer("Who?", [["A", ["Alice went home."]]], latents=1)
