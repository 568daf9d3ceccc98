"""Nested latents: the first k latents of one reader are a reader of k latents, chosen per request."""
import pytest
import torch

from latentqa.config import ConfigError
from latentqa.readers.latent import LatentConfig, LatentReader
from tests.conftest import collate

SMALL = {"selector_heads": 4, "gate_init": 1.0, "question_conditioning": "latents"}
HEADS = {"generate": {}, "extract": {"window_packing": "sentence", "answer_head": "extract", "answer_layers": 1}}


def reader_with(tiny_models, num_latents, answer_head="generate", **config):
    torch.manual_seed(0)
    t5_dir, encoder_dir = tiny_models
    return LatentReader.build(str(t5_dir), str(encoder_dir),
                              LatentConfig(num_latents=num_latents, **SMALL, **HEADS[answer_head], **config)).eval()


def first_k_copy(tiny_models, nested: LatentReader, k: int, answer_head: str) -> LatentReader:
    """A reader built with k latents, holding the nested reader's weights and its first k latents."""
    fixed = reader_with(tiny_models, k, answer_head)
    weights = nested.state_dict()
    weights["selector.latents"] = weights["selector.latents"][:k]
    fixed.load_state_dict(weights)
    return fixed


@pytest.mark.parametrize("answer_head", ["generate", "extract"])
def test_first_k_latents_read_as_a_reader_built_with_k(tiny_models, sample_examples, answer_head):
    nested = reader_with(tiny_models, 8, answer_head, nested_latents=(2, 4, 8))
    fixed = first_k_copy(tiny_models, nested, 2, answer_head)
    batch, _ = collate(nested, sample_examples[:2])
    with torch.no_grad():
        ours, theirs = nested.read(batch, latents=2), fixed.read(batch)
        whole = nested.read(batch)
    torch.testing.assert_close(ours.evidence.attention, theirs.evidence.attention)
    assert ours.mask.shape == theirs.mask.shape  # the decoder reads 2 latents, not 8 with 6 masked
    if answer_head == "generate":
        torch.testing.assert_close(ours.states, theirs.states)
        assert whole.states.shape[1] == ours.states.shape[1] + 6
    else:
        for part in ("start", "end", "kind"):
            torch.testing.assert_close(getattr(ours.answer, part), getattr(theirs.answer, part))
    assert not torch.allclose(whole.evidence.attention, ours.evidence.attention)  # the count is really read


@pytest.mark.parametrize("answer_head", ["generate", "extract"])
def test_a_batch_mixing_counts_answers_each_query_as_alone(tiny_models, sample_examples, answer_head):
    reader = reader_with(tiny_models, 8, answer_head, nested_latents=(2, 4, 8))
    batch, _ = collate(reader, sample_examples[:2])
    with torch.no_grad():
        mixed = reader.generate(batch, latents=torch.tensor([2, 8]), max_new_tokens=4)
        alone = [reader.generate(batch, latents=k, max_new_tokens=4) for k in (2, 8)]
    for row, single in enumerate(alone):
        torch.testing.assert_close(mixed.sentence_scores[row], single.sentence_scores[row])
        if answer_head == "generate":
            assert torch.equal(mixed.sequences[row], single.sequences[row])
        else:
            assert torch.equal(mixed.answer_spans[row], single.answer_spans[row])


def test_nested_training_reads_a_drawn_count_or_every_count(tiny_models, sample_examples):
    reader = reader_with(tiny_models, 8, nested_latents=(2, 4, 8)).train()
    draws = {reader.training_counts()[0] for _ in range(40)}
    assert draws == {2, 4, 8}
    batch, _ = collate(reader, sample_examples[:2])
    reader.config.nested_training = "every"
    assert reader.training_counts() == [2, 4, 8]
    torch.manual_seed(1)  # the same dropout in both computations
    out = reader(batch)
    out.loss.backward()
    grad = reader.selector.latents.grad
    assert torch.isfinite(out.loss) and bool((grad.abs().sum(dim=1) > 0).all())  # every latent learns
    torch.manual_seed(1)
    with torch.no_grad():  # the loss is the mean of the three readings' losses
        per_count = [reader.losses(r, batch).loss for r in reader.read_each(batch, [2, 4, 8])]
    torch.testing.assert_close(out.loss.detach(), torch.stack(per_count).mean())
    reader.eval()
    assert reader.training_counts() == [None]  # evaluation reads every latent


def test_drawn_count_trains_only_the_latents_it_reads(tiny_models, sample_examples):
    reader = reader_with(tiny_models, 8, nested_latents=(2, 8)).train()
    batch, _ = collate(reader, sample_examples[:2])
    reader.training_counts = lambda: [2]
    reader(batch).loss.backward()
    touched = reader.selector.latents.grad.abs().sum(dim=1) > 0
    assert touched.tolist() == [True] * 2 + [False] * 6


def test_counts_outside_the_trained_ones_are_refused_in_one_line(tiny_models):
    nested = reader_with(tiny_models, 8, nested_latents=(2, 4, 8))
    assert nested.latent_counts == (2, 4, 8) and nested.latent_refusal(4) is None
    assert nested.latent_refusal(3) == "this reader was trained to read 2, 4 or 8 latents, got 3"
    plain = reader_with(tiny_models, 8)
    assert plain.latent_refusal(8) is None and "latent.nested_latents" in plain.latent_refusal(4)


@pytest.mark.parametrize("counts", [(2, 4), (4, 2, 8), (0, 8), (2, 2, 8)])
def test_nested_counts_must_ascend_to_num_latents(counts):
    with pytest.raises(ConfigError, match="nested_latents must ascend"):
        LatentConfig(num_latents=8, nested_latents=counts)
