"""Question conditioning: where the question reaches the context path, and what stays question-free."""
import dataclasses

import pytest
import torch

from latentqa.data.features import format_sentence
from tests.conftest import collate


def _reader(tiny_models, **settings):
    from latentqa.readers.latent import LatentConfig, LatentReader

    torch.manual_seed(0)
    t5_dir, encoder_dir = tiny_models
    return LatentReader.build(str(t5_dir), str(encoder_dir),
                              LatentConfig(num_latents=4, selector_heads=4, gate_init=1.0, **settings)).eval()


def _two_questions(sample_examples):
    """The same context asked two different questions."""
    ex = sample_examples[0]
    return ex, dataclasses.replace(ex, question="Which country is the director of the film from?")


@pytest.mark.parametrize("mode,changes", [("none", False), ("latents", True), ("encoder", True)])
def test_only_a_question_aware_selector_attends_differently_to_another_question(tiny_models, sample_examples, mode,
                                                                              changes):
    reader = _reader(tiny_models, question_conditioning=mode)
    a, b = (collate(reader, [ex])[0] for ex in _two_questions(sample_examples))
    with torch.no_grad():
        first, second = reader.read(a).evidence.attention, reader.read(b).evidence.attention
    assert first.shape == second.shape
    assert torch.equal(first, second) != changes


def test_latents_mode_keeps_context_states_question_free(tiny_models, sample_examples):
    reader = _reader(tiny_models, question_conditioning="latents")
    a, b = (collate(reader, [ex])[0] for ex in _two_questions(sample_examples))
    assert not torch.equal(a["encoder_question_ids"], b["encoder_question_ids"])
    with torch.no_grad():
        assert torch.equal(reader.context_states(a), reader.context_states(b))  # bit for bit
    assert reader.cache_refusal() is not None  # trainable encoder
    reader.freeze_encoder()
    assert reader.cache_refusal() is None
    assert "depend on the question" in _reader(tiny_models, question_conditioning="encoder").cache_refusal()


def test_encoder_mode_windows_read_the_question_and_keep_one_state_per_context_token(tiny_models, sample_examples):
    import dataclasses as dc

    reader = _reader(tiny_models, question_conditioning="encoder")
    long = dc.replace(sample_examples[0], paragraphs=tuple(p for ex in sample_examples[:4] for p in ex.paragraphs))
    examples = [long, sample_examples[1]]
    batch, features = collate(reader, examples)
    window = reader.encoder.config.max_position_embeddings
    assert batch["window_ids"].shape[1] <= window
    flat = batch["window_ids"].flatten()
    tok = reader.encoder_tokenizer
    width = batch["window_ids"].shape[1]
    windows_of = []
    for row, ex in enumerate(examples):
        n = len(features["context_ids"][row])
        index = batch["context_index"][row, :n]
        assert flat[index].tolist() == features["context_ids"][row]  # every context token, in reading order
        assert len(set(index.tolist())) == n  # each its own state
        question = [tok.cls_token_id, *tok(ex.question.strip(), add_special_tokens=False)["input_ids"], tok.sep_token_id]
        windows = sorted(set((index // width).tolist()))
        windows_of.append(windows)
        for w in windows:  # every window of this example opens with its question
            assert batch["window_ids"][w, :len(question)].tolist() == question
        expected = [t for p in ex.paragraphs for j, s in enumerate(p.sentences) if (p.title, j) in ex.supporting_facts
                    for t in tok(format_sentence(p.title, s), add_special_tokens=False)["input_ids"]]
        assert flat[index[batch["support"][row, :n]]].tolist() == expected
    assert len(windows_of[0]) > 1 and not set(windows_of[0]) & set(windows_of[1])
    out = reader.train()(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_question_aware_selector_refuses_a_missing_question(tiny_models):
    from latentqa.readers.latent import LatentSelector

    selector = LatentSelector(dim=8, num_latents=2, depth=1, heads=2, question_aware=True)
    context, mask = torch.randn(1, 5, 8), torch.ones(1, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="needs the question"):
        selector(context, mask)
    latents, attention = selector(context, mask, torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool))
    assert latents.shape == (1, 2, 8) and attention.shape == (1, 2, 5)


def test_selector_lexical_bias_moves_attention_to_the_sentences_that_name_the_question(tiny_models, sample_examples):
    """The same reader with and without the bias (weights copied): with it, more of the attention lies on the
    sentences whose lexical evidence is highest; the context states are untouched (still cacheable)."""
    plain = _reader(tiny_models, question_conditioning="latents")
    biased = _reader(tiny_models, question_conditioning="latents", selector_lexical=True)
    biased.load_state_dict(plain.state_dict(), strict=False)  # all but the bias weights
    batch, _ = collate(biased, sample_examples[:2])  # with the lexical evidence the biased reader asks for
    evidence = batch["sentence_lexical"].sum(dim=-1)  # (B, S)
    best = evidence.masked_fill(~batch["sentence_mask"], -1).argmax(dim=1)  # each example's most question-like
    on_best = (batch["sentence_index"] == best[:, None]) & batch["context_mask"]  # (B, L)
    with torch.no_grad():
        states = plain.context_states(batch)
        assert torch.equal(states, biased.context_states(batch))
        mass = [(r.read(batch).evidence.attention * on_best).sum(dim=1) for r in (plain, biased)]
    assert bool((mass[1] > mass[0] + 0.1).all()), mass
    out = biased.train()(batch)
    out.loss.backward()
    assert biased.lexical_bias.grad is not None and bool(biased.lexical_bias.grad.abs().sum() > 0)


def test_selector_lexical_needs_a_question_aware_mode():
    from latentqa.readers.latent import LatentConfig

    with pytest.raises(ValueError, match="selector_lexical"):
        LatentConfig(selector_lexical=True, question_conditioning="none")


def test_selector_lexical_scale_multiplies_the_bias_and_sharpens_the_attention(tiny_models, sample_examples):
    """Same weights, scale 3 against 1: the bias is exactly 3 times as large, more attention lies on the most
    question-like sentence, and the bias weights' gradient is 3 times as large (Adam then moves the bias's logits 3
    times as fast)."""
    from latentqa.readers.heads import LEXICAL_PRIOR

    one = _reader(tiny_models, question_conditioning="latents", selector_lexical=True)
    three = _reader(tiny_models, question_conditioning="latents", selector_lexical=True, selector_lexical_scale=3.0)
    three.load_state_dict(one.state_dict())
    batch, _ = collate(one, sample_examples[:2])
    bias = batch["sentence_lexical"] @ torch.tensor(LEXICAL_PRIOR)  # (B, S) what every head's bias starts from
    best = bias.masked_fill(~batch["sentence_mask"], -1).argmax(dim=1)
    on_best = (batch["sentence_index"] == best[:, None]) & batch["context_mask"]  # (B, L)
    with torch.no_grad():
        torch.testing.assert_close(three.context_bias(batch, None, None), 3 * one.context_bias(batch, None, None))
        mass = [(r.read(batch).evidence.attention * on_best).sum(dim=1) for r in (one, three)]
    assert bool((mass[1] > mass[0]).all()), mass
    for reader in (one, three):
        reader.context_bias(batch, None, None).sum().backward()
    torch.testing.assert_close(three.lexical_bias.grad, 3 * one.lexical_bias.grad, rtol=1e-4, atol=0)


@pytest.mark.parametrize("settings", [dict(selector_lexical_scale=3.0),
                                      dict(selector_lexical=True, selector_lexical_scale=0.0)])
def test_selector_lexical_scale_is_refused_without_the_bias_or_when_not_positive(settings):
    from latentqa.readers.latent import LatentConfig

    with pytest.raises(ValueError, match="selector_lexical_scale"):
        LatentConfig(question_conditioning="latents", **settings)


def _asking_about(example, paragraph: int):
    """The example asked about its `paragraph`'s first sentence, in that sentence's own words."""
    p = example.paragraphs[paragraph]
    return dataclasses.replace(example, question=f"What about {p.sentences[0].strip()}"), (p.title, 0)


def test_sentence_relevance_moves_the_latents_to_the_sentence_the_question_names(tiny_models, sample_examples):
    """The kept conditioning (latents + selector_relevance), untrained and frozen: two questions over one context,
    each repeating another paragraph's first sentence. The context states are bit-equal; the position the latents
    attend to most differs, and lies in the sentence each question names."""
    reader = _reader(tiny_models, question_conditioning="latents", selector_relevance=True)
    reader.freeze_encoder()
    ex = sample_examples[0]
    tops = []
    for paragraph in (0, len(ex.paragraphs) - 1):
        asked, key = _asking_about(ex, paragraph)
        batch, _ = collate(reader, [asked])
        with torch.no_grad():
            reading = reader.read(batch)
        tops.append((reading.evidence.context, int(reading.evidence.attention[0].argmax())))
        sentence = asked.sentence_keys().index(key)
        assert int(batch["sentence_index"][0, tops[-1][1]]) == sentence
    assert torch.equal(tops[0][0], tops[1][0])
    assert tops[0][1] != tops[1][1]


def test_conditioning_path_gets_a_gradient_in_the_first_step(tiny_models, sample_examples):
    reader = _reader(tiny_models, question_conditioning="latents", selector_relevance=True)
    reader.freeze_encoder()
    reader.train()
    batch, _ = collate(reader, sample_examples[:2])
    reader(batch).loss.backward()
    path = {"question blocks": list(reader.selector.question_blocks.parameters()),
            "relevance": list(reader.relevance.parameters())}
    for name, parameters in path.items():
        norm = torch.stack([p.grad.norm() for p in parameters if p.grad is not None]).norm()
        assert len([p for p in parameters if p.grad is not None]) == len(parameters), name
        assert float(norm) > 0, name
    assert any(p is reader.relevance.log_temperature for p in reader.parameter_groups()["latent"])


def test_selector_relevance_needs_a_question_aware_mode():
    from latentqa.readers.latent import LatentConfig

    with pytest.raises(ValueError, match="selector_relevance"):
        LatentConfig(selector_relevance=True, question_conditioning="none")
