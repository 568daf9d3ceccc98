"""The extractive answer head: its targets, its spans, and a tiny reader that learns to extract."""
import json

import pytest
import torch

from latentqa.data.features import answer_boundaries, encode_examples, extraction_targets, format_sentence
from latentqa.evaluation.predict import decode_batch
from latentqa.readers.answer import ExtractiveAnswerHead, answer_text, marginal_nll
from latentqa.data.collate import cut_context
from latentqa.config import SpRule
from latentqa.readers.latent import LatentConfig, LatentReader
from latentqa.readers.loading import load_reader_folder
from tests.conftest import collate

EXTRACT = {"num_latents": 8, "selector_heads": 4, "question_conditioning": "latents", "window_packing": "sentence",
           "answer_head": "extract", "answer_layers": 1}


def extract_reader(tiny_models, seed=0, **config):
    torch.manual_seed(seed)
    t5_dir, encoder_dir = tiny_models
    return LatentReader.build(str(t5_dir), str(encoder_dir), LatentConfig(**{**EXTRACT, **config}))


def sentences_of(example):
    return [format_sentence(p.title, s) for p in example.paragraphs for s in p.sentences]


def test_answer_boundaries_mark_first_and_last_token_of_each_whole_word_occurrence():
    text = "Amber: the amber room, amberly amber"
    offsets = [(0, 5), (5, 6), (7, 10), (11, 16), (17, 21), (21, 22), (23, 30), (31, 36)]
    assert answer_boundaries(text, offsets, "amber room") == ([0, 0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0, 0])
    starts, ends = answer_boundaries(text, offsets, "Amber")
    assert starts == ends == [1, 0, 0, 1, 0, 0, 0, 1]  # "amberly" is not the word
    assert answer_boundaries(text, offsets, "yes") == ([0] * 8, [0] * 8)


def test_targets_come_from_supporting_sentences_or_anywhere_when_they_hold_none():
    keys, texts = [("A", 0), ("B", 0)], ["A: Paris", "B: Paris"]
    offsets = [[(0, 1), (1, 2), (3, 8)]] * 2
    assert extraction_targets(keys, texts, offsets, {("B", 0)}, "Paris") == ([0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1])
    assert extraction_targets(keys, texts, offsets, {("B", 0)}, "A") == ([1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0])


def test_marginal_nll_sums_the_marked_tokens_and_is_nan_without_any():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]))
    marked = torch.tensor([[False, True, True], [False, False, False]])
    nll = marginal_nll(logits, marked)
    assert nll[0].item() == pytest.approx(-torch.log(torch.tensor(0.5)).item())
    assert nll[1].isnan()


def test_answer_text_copies_the_sentence_characters_or_says_yes_no():
    sentences = ["Oasis: Oasis were an English rock band formed in Manchester in 1991."]
    assert answer_text(sentences, [0, 0, 49, 59]) == "Manchester"
    assert answer_text(sentences, [1, 0, 0, 0]) == "yes"
    assert answer_text(sentences, [2, 0, 0, 0]) == "no"


def test_the_head_copies_the_encoders_top_layers_and_refuses_more_than_it_has(tiny_models):
    reader = extract_reader(tiny_models)
    top = reader.encoder.transformer.layer[-1]
    copied = reader.answer.layers[0]
    assert reader.answer.split == len(reader.encoder.transformer.layer) - 1
    assert copied is not top
    assert all(torch.equal(a, b) for a, b in zip(copied.state_dict().values(), top.state_dict().values()))
    with pytest.raises(ValueError, match="answer_layers"):
        ExtractiveAnswerHead(reader.encoder, 3, 4, 20)


def test_a_tiny_reader_learns_to_extract_answers_and_yes_no(tiny_models, sample_examples):
    examples = sample_examples[:4]
    assert {ex.answer for ex in examples} >= {"yes", "no"}
    reader = extract_reader(tiny_models)
    batch, _ = collate(reader, examples)
    groups = reader.parameter_groups()
    assert groups["answer"] and not any(p in set(groups["answer"]) for p in groups["encoder"])
    optimizer = torch.optim.Adam([p for params in groups.values() for p in params], lr=1e-3)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        out = reader(batch)
        out.loss.backward()
        optimizer.step()
        losses.append(out.answer_loss.item())
    assert losses[-1] < 0.2 * losses[0]
    reader.eval()
    answered = decode_batch(reader, examples, reader.generate(batch), SpRule())
    assert [a.answer for a in answered] == [ex.answer for ex in examples]


def test_untrained_spans_are_the_context_own_characters(tiny_models, sample_examples):
    reader = extract_reader(tiny_models).eval()
    examples = sample_examples[:8]
    batch, _ = collate(reader, examples)
    generation = reader.generate(batch)
    for example, span, item in zip(examples, generation.answer_spans.tolist(),
                                   decode_batch(reader, examples, generation, SpRule())):
        kind, sentence, first, last = span
        if kind == 0:
            assert 0 < last - first and item.answer == sentences_of(example)[sentence][first:last].strip()
            assert item.answer in sentences_of(example)[sentence]
        else:
            assert item.answer in ("yes", "no")


def test_masked_latents_leave_the_head_without_its_memory(tiny_models, sample_examples):
    reader = extract_reader(tiny_models, gate_init=1.0).eval()
    batch, _ = collate(reader, sample_examples[:2])
    with torch.no_grad():
        seen, blind = reader.read(batch).answer, reader.read(batch, mask_latents=True).answer
    assert not torch.allclose(seen.start, blind.start)


def test_a_cut_context_reads_only_its_first_tokens(tiny_models, sample_examples):
    reader = extract_reader(tiny_models, max_context_tokens=40)
    batch, features = collate(reader, sample_examples[:2])
    assert batch["context_mask"].sum(dim=1).tolist() == [40, 40]
    row = cut_context(features[0], 40)
    assert all(len(row[name]) == 40 for name in ("context_ids", "answer_start", "token_start"))
    visible = sorted(set(features[0]["sentence_index"][:40]))
    assert batch["sentence_mask"][0].nonzero().squeeze(1).tolist() == visible


def test_the_folder_records_the_head_and_loads_it(tiny_models, sample_examples, tmp_path):
    reader = extract_reader(tiny_models).eval()
    folder = reader.save_pretrained(tmp_path / "reader")
    assert json.loads((folder / "reader.json").read_text())["config"]["answer_head"] == "extract"
    loaded = load_reader_folder(folder)
    batch, _ = collate(loaded, sample_examples[:3])
    assert torch.equal(loaded.generate(batch).answer_spans, reader.generate(batch).answer_spans)


def test_a_folder_written_before_the_answer_head_loads_as_generate(tiny_latent, tmp_path):
    folder = tiny_latent.save_pretrained(tmp_path / "reader")
    meta = json.loads((folder / "reader.json").read_text())
    for name in ("answer_head", "answer_layers", "answer_paragraphs", "max_answer_span", "max_context_tokens"):
        del meta["config"][name]
    (folder / "reader.json").write_text(json.dumps(meta))
    loaded = load_reader_folder(folder)
    assert loaded.config.answer_head == "generate" and loaded.answer is None


def test_state_cache_and_index_keep_both_layers_the_head_reads(tiny_models, sample_examples):
    from latentqa.readers.state_cache import ContextStateCache

    reader = extract_reader(tiny_models).eval()
    reader.freeze_encoder()
    assert reader.state_layers == (reader.answer.split, -1)
    batch, _ = collate(reader, sample_examples[:2])
    live = reader.generate(batch)
    reader.use_state_cache(ContextStateCache(max_mb=64), inference=True)
    cached = reader.generate(batch)
    assert torch.equal(cached.answer_spans, live.answer_spans)
    width = reader.encoder.config.hidden_size
    assert next(iter(reader.state_cache.entries.values()))["states"].shape[-1] == 2 * width
    columns = encode_examples(sample_examples[:1], reader.features, question_tokenizer=reader.t5_tokenizer,
                              context_tokenizer=reader.context_tokenizer, progress=False)
    assert columns["answer_type"] == [1]  # the first sample question's answer is "yes"
