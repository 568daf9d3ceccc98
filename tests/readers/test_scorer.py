"""The sentence scorer: shapes, its loss without support, and that it can learn which sentences support."""
import dataclasses

import torch

from latentqa.readers.scorer import SentenceScorer, sentence_bce
from tests.conftest import collate


def test_sentence_loss_is_zero_without_support_and_nan_per_example():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.2, -4.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    none = torch.zeros(2, 3, dtype=torch.bool)
    each = sentence_bce(logits, none, mask)
    assert bool(each.isnan().all())
    support = torch.tensor([[True, False, False], [False, False, False]])
    each = sentence_bce(logits, support, mask)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[0], support[0].float())
    torch.testing.assert_close(each[0], expected)
    assert each[1].isnan()


def test_reader_scorer_loss_finite_without_support(tiny_models, sample_examples):
    from latentqa.readers.latent import LatentConfig, LatentReader

    t5_dir, encoder_dir = tiny_models
    reader = LatentReader.build(str(t5_dir), str(encoder_dir), LatentConfig(
        num_latents=2, selector_heads=4, sp_scorer="classifier", question_conditioning="latents")).train()
    unlabelled = [dataclasses.replace(ex, supporting_facts=()) for ex in sample_examples[:2]]
    batch, _ = collate(reader, unlabelled)
    out = reader(batch)
    assert out.auxiliary["sp_scorer_loss"].item() == 0.0 and torch.isfinite(out.loss)
    out.loss.backward()
    scores = reader.eval().generate(batch, max_new_tokens=2).sentence_scores
    assert scores.shape == batch["sentence_mask"].shape and bool(((scores >= 0) & (scores <= 1)).all())
    assert bool((scores[~batch["sentence_mask"]] == 0).all())


def test_scorer_learns_the_supporting_sentences(tiny_models, sample_examples):
    """A few hundred steps on 4 examples' states: the supporting sentences come out on top."""
    from latentqa.readers.latent import LatentConfig, LatentReader

    torch.manual_seed(0)
    t5_dir, encoder_dir = tiny_models
    reader = LatentReader.build(str(t5_dir), str(encoder_dir), LatentConfig(
        num_latents=2, selector_heads=4, sp_scorer="classifier", question_conditioning="latents"))
    batch, _ = collate(reader, sample_examples[:4])
    with torch.no_grad():
        context = reader.context_states(batch)
        _, question = reader.question_states(batch)
    scorer = SentenceScorer(dim=context.shape[-1], heads=4, question_aware=True)
    optimizer = torch.optim.AdamW(scorer.parameters(), lr=3e-3)
    for _ in range(150):
        loss = sentence_bce(scorer(context, batch, question), batch["sentence_support"], batch["sentence_mask"])
        optimizer.zero_grad()
        loss.mean().backward()
        optimizer.step()
    logits = scorer.eval()(context, batch, question)
    for row in range(4):
        gold = batch["sentence_support"][row].nonzero().flatten()
        top = logits[row].topk(len(gold)).indices
        assert set(top.tolist()) == set(gold.tolist())


def test_lexical_evidence_enters_the_logits_and_starts_them_from_its_ranking(tiny_models, sample_examples):
    from latentqa.readers.latent import LatentConfig, LatentReader

    torch.manual_seed(0)
    t5_dir, encoder_dir = tiny_models
    reader = LatentReader.build(str(t5_dir), str(encoder_dir), LatentConfig(
        num_latents=2, selector_heads=4, sp_scorer="classifier", question_conditioning="latents", sp_lexical=True))
    batch, _ = collate(reader, sample_examples[:2])
    assert batch["sentence_lexical"].shape == (*batch["sentence_mask"].shape, 5)
    reader.eval()
    with torch.no_grad():
        logits = lambda b: reader.scorer(reader.read(b).evidence.context, b, reader.read(b).evidence.question)
        base = logits(batch)
        lifted = dict(batch, sentence_lexical=batch["sentence_lexical"].clone())
        lifted["sentence_lexical"][0, 1] = 1.0  # sentence 1 of example 0: every feature at its best
        changed = logits(lifted)
    # that sentence's logit rises by (about) the prior's gap to the best; example 1 is untouched
    assert changed[0, 1] > base[0, 1] + 1.0
    torch.testing.assert_close(changed[1], base[1])
    out = reader.train()(batch)
    out.loss.backward()
    assert reader.scorer.lexical_prior.grad is not None and bool(reader.scorer.lexical_prior.grad.abs().sum() > 0)


def test_lexical_evidence_needs_a_question_aware_classifier():
    import pytest

    from latentqa.readers.latent import LatentConfig

    for settings in ({"sp_scorer": "attention", "question_conditioning": "latents"},
                     {"sp_scorer": "classifier", "question_conditioning": "none"}):
        with pytest.raises(ValueError, match="sp_lexical"):
            LatentConfig(sp_lexical=True, **settings)
    with pytest.raises(ValueError, match="sp_paragraph_loss_weight"):  # not silently ignored
        LatentConfig(sp_paragraph_loss_weight=1.0, sp_scorer="attention")


def test_paragraph_loss_scores_each_paragraphs_best_sentence():
    from latentqa.readers.scorer import paragraph_bce

    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0], [0.3, 0.2, -4.0, 0.0]])
    paragraph = torch.tensor([[0, 0, 1, 2], [0, 1, 1, 0]])  # example 1: 2 paragraphs and a padded sentence
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    support = torch.tensor([[False, True, False, False], [False, False, False, False]])
    each = paragraph_bce(logits, support, mask, paragraph)
    # example 0: paragraph 0 (best logit 2.0) holds the fact, paragraphs 1 (0.5) and 2 (-3.0) do not
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0, 0.5, -3.0]),
                                                                    torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(each[0], expected)
    assert each[1].isnan()  # no supporting sentence: nothing to learn from


def test_paragraph_loss_trains_in_the_reader(tiny_models, sample_examples):
    from latentqa.readers.latent import LatentConfig, LatentReader

    t5_dir, encoder_dir = tiny_models
    reader = LatentReader.build(str(t5_dir), str(encoder_dir), LatentConfig(
        num_latents=2, selector_heads=4, sp_scorer="classifier", question_conditioning="latents",
        sp_paragraph_loss_weight=1.0)).train()
    batch, _ = collate(reader, sample_examples[:2])
    out = reader(batch)
    each = out.per_example["sp_paragraph_loss"]
    assert each.shape == (2,) and bool(torch.isfinite(each).all())
    parts = out.auxiliary
    torch.testing.assert_close(out.loss, out.answer_loss + parts["support_loss"] + parts["sp_scorer_loss"] + each.mean())
