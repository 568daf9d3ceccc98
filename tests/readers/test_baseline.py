from pathlib import Path

import pytest
import torch

from latentqa.readers.loading import load_reader_folder
from latentqa.readers.baseline import BaselineConfig, BaselineReader
from latentqa.readers.errors import ReaderFolderError
from latentqa.readers.latent import LatentReader
from tests.conftest import collate


def test_input_is_question_then_context_truncated(tiny_baseline, sample_examples):
    batch, features = collate(tiny_baseline, sample_examples[:2])
    tok = tiny_baseline.t5_tokenizer
    assert batch["input_ids"].shape[1] == 128
    text = tok.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert text.startswith("question: " + sample_examples[0].question.strip()[:20])
    assert "context: Ed Wood (film): Ed Wood is a 1994" in text
    assert batch["input_ids"][0, -1] == tok.eos_token_id
    for row, labels in zip(batch["labels"].tolist(), features["labels"]):
        assert row == labels + [-100] * (len(row) - len(labels))  # the answer, then -100 (ignored by the loss)


def test_untruncated_reads_the_whole_context(tiny_baseline, sample_examples):
    tiny_baseline.config = BaselineConfig(max_input_tokens=None)
    batch, features = collate(tiny_baseline, sample_examples[:2])
    assert batch["context_kept"].tolist() == [len(ids) for ids in features["context_ids"]]
    assert batch["input_ids"].shape[1] > 1000
    out = tiny_baseline(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_save_load_round_trip_is_exact(tiny_baseline, sample_examples, tmp_path):
    reader = tiny_baseline.eval()
    batch, _ = collate(reader, sample_examples[:3])
    reader.save_pretrained(tmp_path / "baseline")
    loaded = load_reader_folder(tmp_path / "baseline", expected=BaselineReader)
    assert loaded.config == reader.config
    with torch.no_grad():
        assert torch.equal(reader(batch).loss, loaded(batch).loss)
    for beams in (1, 2):
        assert torch.equal(reader.generate(batch, max_new_tokens=5, num_beams=beams).sequences,
                           loaded.generate(batch, max_new_tokens=5, num_beams=beams).sequences)
    assert load_reader_folder(tmp_path / "baseline").kind == "baseline"


def test_broken_reader_folders_are_named_in_one_line(tiny_baseline, tmp_path, sample_path, capsys):
    import json
    import shutil

    from latentqa.cli import main

    good = tiny_baseline.save_pretrained(tmp_path / "good")
    with pytest.raises(ReaderFolderError, match="holds a baseline reader, not a LatentReader"):
        load_reader_folder(good, expected=LatentReader)

    def broken(name, change):
        folder = Path(shutil.copytree(good, tmp_path / name))
        change(folder)
        return folder

    cases = {
        "no-weights": (lambda f: (f / "model.safetensors").unlink(), "no model.safetensors"),
        "corrupt-weights": (lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 64),
                            "model.safetensors: cannot load the weights"),
        "other-version": (lambda f: (f / "reader.json").write_text(json.dumps(
            {"kind": "baseline", "config": {"max_input_tokens": 512, "added_later": 1}})),
            "reader.json: not a reader description this version reads"),
        "no-kind": (lambda f: (f / "reader.json").write_text("{}"), "reader.json: not a reader description"),
        "not-json": (lambda f: (f / "reader.json").write_text("{"), "reader.json: not a reader description"),
    }
    for name, (change, message) in cases.items():
        folder = broken(name, change)
        capsys.readouterr()
        assert main(["predict", "--model", str(folder), "--data", str(sample_path), "--out",
                     str(tmp_path / "p.json"), "--cache-dir", str(tmp_path / "cache")]) == 2, name
        err = capsys.readouterr().err
        assert message in err and str(folder) in err and "Traceback" not in err and err.count("\n") == 1, (name, err)


def test_the_training_loss_is_t5s_own_and_per_example_losses_average_their_tokens(tiny_baseline, sample_examples):
    reader = tiny_baseline.eval()
    batch, _ = collate(reader, sample_examples[:3])
    with torch.no_grad():
        out = reader(batch)
        t5_loss = reader.t5(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            labels=batch["labels"]).loss
        each = [reader.t5(input_ids=batch["input_ids"][i:i + 1], attention_mask=batch["attention_mask"][i:i + 1],
                          labels=batch["labels"][i:i + 1]).loss for i in range(3)]
    torch.testing.assert_close(out.loss, t5_loss, rtol=1e-6, atol=0)  # token-weighted, as T5 computes it
    torch.testing.assert_close(out.per_example["answer_loss"], torch.stack(each), rtol=1e-5, atol=1e-6)
