"""Evidence heads: the reader's losses, scores and feature needs are the sum of its heads'."""
import dataclasses

import pytest
import torch

from latentqa.readers.heads import LEXICAL_PRIOR, LexicalHead
from latentqa.readers.latent import LatentConfig, LatentReader
from tests.conftest import collate

CONFIGS = {
    "plain": LatentConfig(num_latents=2, selector_heads=4),
    "scorer": LatentConfig(num_latents=2, selector_heads=4, question_conditioning="latents", sp_scorer="classifier",
                           sp_paragraph_loss_weight=0.5),
    "preset-like": LatentConfig(num_latents=2, selector_heads=4, question_conditioning="latents",
                                sp_scorer="classifier", sp_lexical=True, selector_lexical=True,
                                paragraph_ranker=True),
    "bias only": LatentConfig(num_latents=2, selector_heads=4, question_conditioning="latents",
                              selector_lexical=True),
    "relevance": LatentConfig(num_latents=2, selector_heads=4, question_conditioning="latents",
                              selector_relevance=True),
}
HEADS = {"plain": ["selector attention"], "scorer": ["selector attention", "sentence scorer"],
         "preset-like": ["selector attention", "sentence scorer", "pair ranker"], "bias only": ["selector attention"],
         "relevance": ["selector attention"]}


def _scaled(config: LatentConfig, scale: float) -> LatentConfig:
    """`config` with every auxiliary loss weight multiplied by `scale`."""
    return dataclasses.replace(config, **{f.name: getattr(config, f.name) * scale
                                          for f in dataclasses.fields(config) if f.name.endswith("loss_weight")})


@pytest.mark.parametrize("name", CONFIGS)
def test_the_loss_moves_with_the_auxiliary_weights_as_declared(tiny_models, sample_examples, name):
    """Weights 0: the loss is the answer loss alone; doubled: what they add doubles; the answer loss never moves."""
    losses = {}
    for scale in (0.0, 1.0, 2.0):
        torch.manual_seed(0)
        reader = LatentReader.build(str(tiny_models[0]), str(tiny_models[1]), _scaled(CONFIGS[name], scale)).eval()
        batch, _ = collate(reader, sample_examples[:3])
        for head in reader.heads:
            if head.needs_fit:
                head.fit([batch])
        with torch.no_grad():
            out = reader(batch)
        losses[scale] = (out.loss.item(), out.answer_loss.item())
    (none, answer), (once, answer_1), (twice, answer_2) = losses[0.0], losses[1.0], losses[2.0]
    assert answer == answer_1 == answer_2 and none == pytest.approx(answer, abs=1e-6)
    assert once > answer and twice - answer == pytest.approx(2 * (once - answer), rel=1e-5)


@pytest.mark.parametrize("name", CONFIGS)
def test_losses_scores_and_features_come_from_the_heads(tiny_models, sample_examples, name):
    torch.manual_seed(0)
    t5_dir, encoder_dir = tiny_models
    reader = LatentReader.build(str(t5_dir), str(encoder_dir), CONFIGS[name]).eval()
    assert [head.name for head in reader.heads] == HEADS[name]
    # lexical features are built exactly when a part reads them: a head, or the selector's bias
    assert reader.features.lexical == (name in ("preset-like", "bias only"))
    batch, _ = collate(reader, sample_examples[:3])
    assert ("sentence_lexical" in batch) == reader.features.lexical
    for head in reader.heads:
        if head.needs_fit:
            head.fit([batch])
    with torch.no_grad():
        out = reader(batch)
        evidence = reader.read(batch).evidence
        losses = [loss for head in reader.heads for loss in head.losses(evidence, batch)]
        generation = reader.generate(batch, max_new_tokens=2)
    assert set(out.per_example) == {"loss", "answer_loss", *(loss_name for loss_name, _, _ in losses)}
    sentence_head = reader.scorer if name in ("scorer", "preset-like") else reader.attention_head
    torch.testing.assert_close(generation.sentence_scores, sentence_head.scores(evidence, batch))
    assert (generation.paragraph_scores is not None) == (name == "preset-like")


def test_attention_head_scores_are_the_selectors_mass_per_sentence(tiny_latent, sample_examples):
    batch, _ = collate(tiny_latent, sample_examples[:2])
    with torch.no_grad():
        evidence = tiny_latent.eval().read(batch).evidence
        scores = tiny_latent.attention_head.scores(evidence, batch)
    # every context token belongs to one sentence: the per-sentence masses add up to the whole attention
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(2), rtol=1e-5, atol=1e-5)
    first = batch["sentence_index"][0] == 0
    torch.testing.assert_close(scores[0, 0], evidence.attention[0][first & batch["context_mask"][0]].sum())


def test_lexical_head_weighs_each_feature_by_the_prior():
    features = torch.eye(len(LEXICAL_PRIOR))[None]  # (1, F sentences, F): sentence i holds feature i only
    assert LexicalHead.reads_lexical
    assert LexicalHead().scores(None, {"sentence_lexical": features})[0].tolist() == list(LEXICAL_PRIOR)
