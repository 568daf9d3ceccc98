"""A reader with the extractive answer head, trained by the trainer, answers the same through every consumer:
predict, eval, the Python API, HTTP, and an index (`ask`, `predict --index`); every span is the context's own text."""
import json

import pytest

import latentqa
from latentqa.cli import main
from latentqa.data.features import format_sentence
from latentqa.data.sources import load_examples
from latentqa.serving.app import create_app
from latentqa.training.config import load_config
from latentqa.training.trainer import train

from .serving.conftest import ServerThread, as_query

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def extract_run(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("extract")
    t5_dir, encoder_dir = tiny_models
    return train(load_config(None, [
        f"model.t5={t5_dir}", f"model.encoder={encoder_dir}", "latent.num_latents=4", "latent.selector_heads=4",
        "latent.question_conditioning=latents", "latent.window_packing=sentence", "latent.answer_head=extract",
        "latent.answer_layers=1", "latent.gate_init=1.0", "data.train_limit=8", "data.validation_limit=4",
        f"data.cache_dir={out / 'cache'}", f"train.output_dir={out / 'run'}", "train.epochs=1",
        "train.batch_size=4", "train.freeze_encoder=true", "train.lr_answer=1e-3", "train.best_metric=f1",
        "train.log_every_steps=1"]))


def test_every_consumer_gives_the_extracted_answer(extract_run, sample_path, sample_examples, tmp_path, capsys):
    folder = extract_run / "best"
    log = [json.loads(line) for line in (extract_run / "metrics.jsonl").read_text().splitlines()]
    assert any("lr_answer" in entry for entry in log)  # the head trains with its own learning rate
    flags = ["--model", str(folder), "--data", str(sample_path), "--limit", "6", "--cache-dir", str(tmp_path)]
    assert main(["predict", *flags, "--out", str(tmp_path / "pred.json")]) == 0
    assert main(["eval", *flags, "--out-dir", str(tmp_path / "eval")]) == 0
    predicted = json.loads((tmp_path / "pred.json").read_text())["answer"]
    assert main(["predict", *flags, "--mask-latents", "--out", str(tmp_path / "masked.json")]) == 0
    assert len(json.loads((tmp_path / "masked.json").read_text())["answer"]) == 6  # what the latents add: docs/real.md
    evaluated = json.loads((tmp_path / "eval" / "predictions.json").read_text())["answer"]

    examples = load_examples(str(sample_path), limit=6)[0]
    pipeline = latentqa.load_reader(folder, cache_mb=0)
    from_python = {a.id: a.answer for a in pipeline.answer_batch([as_query(ex) for ex in examples])}
    with ServerThread(create_app(pipeline, generation=pipeline.generation())) as server:
        status, replies = server.request("POST", "/v1/answer", [as_query(ex) for ex in examples])
    assert status == 200
    served = {reply["id"]: reply["answer"] for reply in replies}
    assert predicted == evaluated == from_python == served
    for example in examples:
        text = " ".join(format_sentence(p.title, s) for p in example.paragraphs for s in p.sentences)
        assert predicted[example.id] in ("yes", "no") or predicted[example.id] in text

    # An index keeps both layers the head reads: an answer from it equals the answer given the same paragraphs.
    corpus = tmp_path / "corpus.jsonl"
    paragraphs = [p for ex in examples for p in ex.paragraphs]
    corpus.write_text("".join(json.dumps({"title": p.title, "sentences": list(p.sentences)}) + "\n"
                              for p in paragraphs))
    assert main(["index", "--model", str(folder), "--data", str(corpus), "--out", str(tmp_path / "i")]) == 0
    capsys.readouterr()
    question = examples[1].question
    assert main(["ask", "--index", str(tmp_path / "i"), "--json", "--top-k", "3", question]) == 0
    reply = json.loads(capsys.readouterr().out)
    indexed = latentqa.load_reader(folder, cache_mb=0, index=tmp_path / "i", top_k=3)
    from_index = indexed.answer(question)
    by_title = {p.title: p for p in paragraphs}
    given = pipeline.answer(question, [[h.title, list(by_title[h.title].sentences)] for h in from_index.retrieved])
    assert reply["answer"] == from_index.answer == given.answer
