"""Gold-paragraph recall, the first-and-best rule, and the untrained floors (`latentqa cosine-sp`)."""
import json

from latentqa.cli import main
from latentqa.evaluation.retrieval import paragraph_recall
from latentqa.config import SpRule
from latentqa.evaluation.facts import select_facts


def _example(sample_examples):
    return next(ex for ex in sample_examples if len({t for t, _ in ex.supporting_facts}) == 2)


def test_paragraph_recall_counts_gold_paragraphs_among_the_best_two(sample_examples):
    ex = _example(sample_examples)
    gold = sorted({t for t, _ in ex.supporting_facts})
    keys = ex.sentence_keys()
    both = [1.0 if title in gold else 0.0 for title, _ in keys]
    one = [1.0 if title == gold[0] else (0.5 if title != gold[1] else 0.0) for title, _ in keys]
    assert paragraph_recall([ex], {ex.id: both}) == 1.0
    assert paragraph_recall([ex], {ex.id: one}) == 0.5
    assert paragraph_recall([ex], {ex.id: [0.0] * len(keys)}, top=len(ex.paragraphs)) == 1.0


def test_first_and_best_takes_both_sentences_of_the_best_paragraphs(sample_examples):
    ex = _example(sample_examples)
    keys = ex.sentence_keys()
    titles = [p.title for p in ex.paragraphs if len(p.sentences) >= 3][:2]
    scores = [0.0] * len(keys)
    for title in titles:
        scores[keys.index((title, 2))] = 0.9  # the third sentence is each paragraph's best
    chosen = select_facts(ex, scores, SpRule(paragraphs=2, first=True))
    assert sorted(map(tuple, chosen)) == sorted([(t, 0) for t in titles] + [(t, 2) for t in titles])


def test_cosine_sp_command_scores_and_writes_a_prediction_file(sample_path, tmp_path, capsys):
    out = tmp_path / "cosine.json"
    assert main(["cosine-sp", "--data", str(sample_path), "--limit", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert all(f"{kind:<8} {rule}" in printed for kind in ("cosine", "lexical")
               for rule in ("top2", "first-and-best", "paragraphs")) and "recall@2" in printed
    prediction = json.loads(out.read_text())
    assert len(prediction["sp"]) == 4 and all(2 <= len(f) <= 4 for f in prediction["sp"].values())


def test_cosine_floor_beats_chance_on_real_questions(sample_examples):
    from transformers import AutoModel, AutoTokenizer

    from latentqa.assets import pretrained_encoder_path
    from latentqa.evaluation.retrieval import cosine_scores

    path = pretrained_encoder_path()
    examples = sample_examples[:8]
    scores = cosine_scores(examples, AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path),
                           progress=False)
    assert all(len(scores[ex.id]) == len(ex.sentence_keys()) for ex in examples)
    assert paragraph_recall(examples, scores) > 0.5  # chance: 2 of 10 paragraphs, 0.2


def test_lexical_floor_beats_chance_on_real_questions(sample_examples):
    from transformers import AutoTokenizer

    from latentqa.assets import pretrained_encoder_path
    from latentqa.evaluation.retrieval import lexical_scores

    examples = sample_examples[:20]
    scores = lexical_scores(examples, AutoTokenizer.from_pretrained(pretrained_encoder_path()))
    assert all(len(scores[ex.id]) == len(ex.sentence_keys()) for ex in examples)
    assert paragraph_recall(examples, scores) > 0.6  # chance 0.2; on the 200 validation questions 0.82
