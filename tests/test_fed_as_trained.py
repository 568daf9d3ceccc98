"""A reader folder says how it is fed: a reader trained with short question and answer limits is predicted,
evaluated, served over HTTP and answered from Python with those limits, not with defaults of the consumers."""
import json

import pytest

import latentqa
from latentqa.cli import main
from latentqa.data.sources import load_examples
from latentqa.readers.loading import load_reader_folder
from latentqa.resources import SAMPLE_PATH
from latentqa.serving.app import create_app
from latentqa.training.config import load_config
from latentqa.training.trainer import train

from .serving.conftest import ServerThread, as_query

QUESTION_TOKENS, ANSWER_TOKENS = 16, 8


@pytest.fixture(scope="module")
def short_fed_reader(tiny_models, sample_examples, tmp_path_factory):
    """One training step with data.max_question_tokens=16, data.max_answer_tokens=8; and a data file of two
    questions that share their first 16 T5 tokens and differ after them."""
    out = tmp_path_factory.mktemp("short")
    t5_dir, encoder_dir = tiny_models
    run = train(load_config(None, [
        f"model.t5={t5_dir}", f"model.encoder={encoder_dir}", "latent.num_latents=4", "latent.selector_heads=4",
        "latent.gate_init=1.0", f"data.max_question_tokens={QUESTION_TOKENS}", f"data.max_answer_tokens={ANSWER_TOKENS}",
        "data.train_limit=4", "data.validation_limit=2", f"data.cache_dir={out / 'cache'}",
        f"train.output_dir={out / 'run'}", "train.max_steps=1", "train.batch_size=4", "eval.max_new_tokens=4"]))
    record = json.loads(SAMPLE_PATH.read_text())[0]
    long_question = " ".join(["which"] * 40)
    records = [{**record, "_id": "a", "question": long_question + " city"},
               {**record, "_id": "b", "question": long_question + " river flows through the old town"}]
    data = out / "two.json"
    data.write_text(json.dumps(records))
    return run / "best", data


def test_every_consumer_feeds_the_reader_its_own_limits(short_fed_reader, tmp_path, sample_examples):
    folder, data = short_fed_reader
    saved = json.loads((folder / "reader.json").read_text())["features"]
    assert saved == {"max_question_tokens": QUESTION_TOKENS, "max_answer_tokens": ANSWER_TOKENS, "lexical": False}

    flags = ["--model", str(folder), "--data", str(data), "--max-new-tokens", "6", "--cache-dir", str(tmp_path)]
    assert main(["predict", *flags, "--out", str(tmp_path / "pred.json")]) == 0
    assert main(["eval", *flags, "--out-dir", str(tmp_path / "eval")]) == 0
    predicted = json.loads((tmp_path / "pred.json").read_text())["answer"]
    evaluated = json.loads((tmp_path / "eval" / "predictions.json").read_text())["answer"]

    pipeline = latentqa.load_reader(folder, cache_mb=0)
    examples = load_examples(str(data))[0]
    rows = [pipeline.prepare(example).row for example in examples]
    assert [len(row["question_ids"]) for row in rows] == [QUESTION_TOKENS - 1] * 2  # EOS is added on collating
    assert rows[0]["question_ids"] == rows[1]["question_ids"]  # the questions differ only past the limit
    from_python = {a.id: a.answer for a in pipeline.answer_batch([as_query(ex) for ex in examples], max_new_tokens=6)}

    with ServerThread(create_app(pipeline, generation=pipeline.generation(max_new_tokens=6))) as server:
        status, replies = server.request("POST", "/v1/answer", [as_query(ex) for ex in examples])
    assert status == 200
    served = {reply["id"]: reply["answer"] for reply in replies}

    assert predicted == evaluated == from_python == served
    assert predicted["a"] == predicted["b"]  # both read as the same 16 tokens


@pytest.mark.parametrize("damage", ["no features", "old rule names"])
def test_a_folder_without_the_saved_limits_or_rule_is_refused_naming_the_file(short_fed_reader, tmp_path, damage):
    import shutil

    from latentqa.readers.errors import ReaderFolderError

    folder = shutil.copytree(short_fed_reader[0], tmp_path / "old")
    meta = json.loads((folder / "reader.json").read_text())
    if damage == "no features":
        del meta["features"]
    else:
        meta["sp_rule"] = {f"sp_{name}": value for name, value in meta["sp_rule"].items()}
    (folder / "reader.json").write_text(json.dumps(meta))
    with pytest.raises(ReaderFolderError, match=r"reader\.json: not a reader description this version reads"):
        load_reader_folder(folder)
