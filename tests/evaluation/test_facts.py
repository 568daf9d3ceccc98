"""Choosing supporting facts by a rule from per-sentence scores: top-k, threshold, the paragraph rule, and the
paragraph rule ordered by a paragraph head's scores."""
from latentqa.config import SpRule
from latentqa.evaluation.facts import select_facts


def test_select_facts_top_k_and_threshold(sample_examples):
    example = sample_examples[0]
    keys = example.sentence_keys()
    scores = [0.0] * len(keys)
    scores[3], scores[1], scores[5] = 0.5, 0.3, 0.2
    top = select_facts(example, scores, SpRule(top_k=2))
    assert top == [list(keys[1]), list(keys[3])]  # the two best, in context order
    assert select_facts(example, scores, SpRule(threshold=0.25)) == [list(keys[1]), list(keys[3])]
    assert select_facts(example, scores, SpRule(threshold=0.2)) == [list(keys[i]) for i in (1, 3, 5)]
    assert select_facts(example, scores, SpRule(threshold=0.9)) == [list(keys[3])]  # the best one always


def test_select_facts_by_paragraphs(sample_examples):
    example = next(ex for ex in sample_examples if len(ex.paragraphs) >= 3 and len(ex.paragraphs[1].sentences) >= 3)
    keys = example.sentence_keys()
    where = {key: i for i, key in enumerate(keys)}
    first, second, third = (p.title for p in example.paragraphs[:3])
    scores = [0.0] * len(keys)
    scores[where[first, 0]] = 0.9  # paragraph 1's best
    scores[where[second, 0]], scores[where[second, 1]], scores[where[second, 2]] = 0.1, 0.6, 0.4  # paragraph 2's
    scores[where[third, 0]] = 0.5  # paragraph 3's best is below paragraph 2's best
    chosen = select_facts(example, scores, SpRule(paragraphs=2))
    assert chosen == [[first, 0], [second, 1]]  # one sentence from each of the 2 best paragraphs
    assert select_facts(example, scores, SpRule(paragraphs=2, threshold=0.3)) == \
        [[first, 0], [second, 1], [second, 2]]  # their others over the threshold; paragraph 3's 0.5 stays out
    assert select_facts(example, scores, SpRule(paragraphs=1)) == [[first, 0]]
    assert select_facts(example, scores, SpRule(paragraphs=2, first=True)) == \
        [[first, 0], [second, 0], [second, 1]]  # and each one's first sentence


def test_the_paragraph_rule_takes_the_ranked_paragraphs_not_those_of_the_best_sentences(sample_examples):
    example = sample_examples[0]
    keys = example.sentence_keys()
    titles = list(dict.fromkeys(title for title, _ in keys))
    scores = [1.0 if title == titles[0] else 0.5 for title, _ in keys]  # the sentences favour paragraph 0
    paragraphs = [2.0 if title in titles[-2:] else 0.0 for title, _ in keys]  # the ranker the last two
    rule = SpRule(paragraphs=2)
    assert {t for t, _ in select_facts(example, scores, rule)} >= {titles[0]}
    chosen = select_facts(example, scores, rule, paragraphs)
    assert {t for t, _ in chosen} == set(titles[-2:]) and len(chosen) == 2
    assert select_facts(example, scores, SpRule(top_k=2), paragraphs) == \
        select_facts(example, scores, SpRule(top_k=2))  # top-k reads the sentence scores only
