"""The paragraph-pair ranker: its features by hand, the gold pair, a fit that learns the bridge, and the reader,
trainer and rule that carry it."""

import pytest
import torch

from latentqa.readers.latent import LatentConfig, LatentReader
from latentqa.readers.loading import load_reader_folder
from latentqa.readers.pairs import PAIR_FEATURES, PairRanker, gold_pairs, pair_features, paragraph_evidence
from tests.conftest import collate


def batch_of(lexical, paragraph, links, support):
    """A hand-made batch of one context: per sentence its 5 lexical numbers, paragraph and support flag."""
    return {"sentence_lexical": torch.tensor([lexical]), "sentence_paragraph": torch.tensor([paragraph]),
            "sentence_mask": torch.ones(1, len(paragraph), dtype=torch.bool),
            "sentence_support": torch.tensor([support]), "paragraph_links": torch.tensor([links])}


# 3 paragraphs (sentences 0-1, 2, 3); paragraph 0 names paragraph 1's title
HAND = batch_of(lexical=[[.2, .5, 1., 0., .0], [.4, .5, 1., 0., .9], [.1, .3, 0., .6, 0.], [0., .1, 0., 0., 0.]],
                paragraph=[0, 0, 1, 2], links=[[0., 1., 0.], [0., 0., 0.], [0., 0., 0.]],
                support=[False, True, True, False])


def test_each_paragraph_has_the_most_of_each_feature_its_sentences_have():
    evidence, present = paragraph_evidence(HAND)
    torch.testing.assert_close(evidence[0], torch.tensor([[.4, .5, 1., 0., .9], [.1, .3, 0., .6, 0.],
                                                          [0., .1, 0., 0., 0.]]))
    assert present.tolist() == [[True, True, True]]


def test_pair_features_by_hand_and_only_pairs_of_real_paragraphs_count():
    features, valid = pair_features(HAND)
    assert features.shape == (1, 3, 3, len(PAIR_FEATURES))
    named = dict(zip(PAIR_FEATURES, features[0, 0, 1].tolist()))
    assert named["sum_sentence_cover"] == pytest.approx(.5) and named["difference_paragraph_cover"] == pytest.approx(.2)
    assert named["link_larger"] == 1.0 and named["link_smaller"] == 0.0
    assert named["link_times_cover"] == pytest.approx(.5)  # paragraph 0 names 1, and covers .5 of the question
    assert named["both_titles_in_question"] == 0.0
    assert valid[0].tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    # a padded paragraph (no sentences) and padded sentences count nowhere
    padded = {**HAND, "paragraph_links": torch.zeros(1, 4, 4), "sentence_mask": torch.tensor([[True, True, True, False]])}
    padded["paragraph_links"][0, :3, :3] = HAND["paragraph_links"][0]
    _, valid = pair_features(padded)
    assert not valid[0, :, 2:].any() and valid[0, 0, 1]


def test_the_gold_pair_needs_exactly_two_paragraphs():
    assert gold_pairs(HAND).tolist() == [0 * 3 + 1]
    one = {**HAND, "sentence_support": torch.tensor([[True, True, False, False]])}
    three = {**HAND, "sentence_support": torch.tensor([[True, False, True, True]])}
    assert gold_pairs(one).tolist() == gold_pairs(three).tolist() == [-1]


def test_fit_learns_to_rank_the_linked_pair_first_and_its_paragraphs_score_highest():
    # every context: the gold pair is the one joined by a link, never the pair whose paragraphs cover the most
    torch.manual_seed(0)
    batches = []
    for _ in range(8):
        lexical = torch.rand(4, 6, 5) * 0.5  # 4 contexts, 6 paragraphs of one sentence each
        links = torch.zeros(4, 6, 6)
        gold = torch.randint(0, 6, (4, 2))
        gold[:, 1] = (gold[:, 0] + 1 + torch.randint(0, 5, (4,))) % 6
        support = torch.zeros(4, 6, dtype=torch.bool)
        for i, (a, b) in enumerate(gold.tolist()):
            links[i, a, b] = 1.0
            support[i, [a, b]] = True
        batches.append({"sentence_lexical": lexical, "sentence_paragraph": torch.arange(6).repeat(4, 1),
                        "sentence_mask": torch.ones(4, 6, dtype=torch.bool), "sentence_support": support,
                        "paragraph_links": links})
    ranker = PairRanker()
    assert not ranker.fitted
    figures = ranker.fit(batches)
    assert figures["questions"] == 32 and figures["gold_pair_first"] == 1.0 and ranker.fitted
    scores = ranker.scores(None, batches[0])
    for row, pair in zip(scores, gold_pairs(batches[0]).tolist()):
        top = set(row.topk(2).indices.tolist())
        assert top == {pair // 6, pair % 6}
    assert set(ranker.state_dict()) == {"weights", "fitted"}  # saved with the reader, never trained by SGD
    assert not list(ranker.parameters())


def test_fit_refuses_data_without_a_gold_pair():
    with pytest.raises(ValueError, match="exactly 2 paragraphs"):
        PairRanker().fit([{**HAND, "sentence_support": torch.zeros(1, 4, dtype=torch.bool)}])


def test_the_reader_gives_each_sentence_its_paragraphs_score_and_keeps_the_fit(tiny_models, sample_examples,
                                                                               tmp_path):
    t5_dir, encoder_dir = tiny_models
    with pytest.raises(ValueError, match="paragraph_ranker"):
        LatentConfig(paragraph_ranker=True)  # question-blind: refused
    torch.manual_seed(0)
    reader = LatentReader.build(str(t5_dir), str(encoder_dir), LatentConfig(
        num_latents=2, selector_heads=4, question_conditioning="latents", paragraph_ranker=True)).eval()
    batch, _ = collate(reader, sample_examples[:3])
    reader.pair_ranker.fit([batch])
    generation = reader.generate(batch, max_new_tokens=2)
    assert generation.paragraph_scores.shape == generation.sentence_scores.shape
    torch.testing.assert_close(generation.paragraph_scores, reader.pair_ranker.scores(None, batch))
    reader.save_pretrained(tmp_path / "reader")
    loaded = load_reader_folder(tmp_path / "reader")
    assert bool(loaded.pair_ranker.fitted)
    torch.testing.assert_close(loaded.pair_ranker.weights, reader.pair_ranker.weights)
    assert "pair_ranker" not in {n.split(".")[0] for n, p in reader.named_parameters()}


def test_training_fits_the_ranker_before_the_first_step(tiny_models, tmp_path):
    from latentqa.training.config import load_config
    from latentqa.training.trainer import train

    t5_dir, encoder_dir = tiny_models
    run = train(load_config(None, [
        f"model.t5={t5_dir}", f"model.encoder={encoder_dir}", "latent.num_latents=2", "latent.selector_heads=4",
        "latent.question_conditioning=latents", "latent.sp_scorer=classifier", "latent.paragraph_ranker=true",
        "data.train_limit=12", "data.validation_limit=4", f"data.cache_dir={tmp_path / 'cache'}",
        f"train.output_dir={tmp_path / 'run'}", "train.epochs=1", "train.batch_size=4", "eval.max_new_tokens=2"]))
    reader = load_reader_folder(run / "best")
    assert bool(reader.pair_ranker.fitted) and reader.pair_ranker.weights.abs().sum() > 0
    assert reader.sp_rule is not None


def test_training_data_without_a_gold_pair_is_refused_naming_the_file(tiny_models, sample_path, tmp_path):
    import json

    from latentqa.config import ConfigError
    from latentqa.training.config import load_config
    from latentqa.training.trainer import train

    t5_dir, encoder_dir = tiny_models
    raw = json.loads(sample_path.read_text())[:4]
    for item in raw:
        item["supporting_facts"] = item["supporting_facts"][:1]  # one paragraph each: no gold pair anywhere
    path = tmp_path / "one_paragraph.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=f"data.train {path}.*exactly 2 paragraphs"):
        train(load_config(None, [
            f"model.t5={t5_dir}", f"model.encoder={encoder_dir}", "latent.num_latents=2", "latent.selector_heads=4",
            "latent.question_conditioning=latents", "latent.paragraph_ranker=true", f"data.train={path}",
            f"data.validation={path}", f"data.cache_dir={tmp_path / 'cache'}", f"train.output_dir={tmp_path / 'run'}"]))
