import torch

from latentqa.readers.base import load_reader
from latentqa.readers.baseline import BaselineConfig, BaselineReader
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
    loaded = BaselineReader.from_pretrained(tmp_path / "baseline")
    assert loaded.config == reader.config
    with torch.no_grad():
        assert torch.equal(reader(batch).loss, loaded(batch).loss)
    for beams in (1, 2):
        assert torch.equal(reader.generate(batch, max_new_tokens=5, num_beams=beams).sequences,
                           loaded.generate(batch, max_new_tokens=5, num_beams=beams).sequences)
    assert load_reader(tmp_path / "baseline").kind == "baseline"
