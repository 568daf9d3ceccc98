"""The supporting-fact rule: chosen on validation, saved with the reader, used unless the command line says."""
import json

from latentqa.cli import main
from latentqa.evaluation.sp_rule import choose_sp_rule, rule_sp_f1
from latentqa.config import SpRule


def _scored(examples, extra: int):
    """Scores that rank each example's gold facts first, then `extra` wrong sentences at 0.5, the rest at 0."""
    scores = {}
    for ex in examples:
        keys = ex.sentence_keys()
        gold = set(ex.supporting_facts)
        values = [0.9 if key in gold else 0.0 for key in keys]
        wrong = [i for i, key in enumerate(keys) if key not in gold][:extra]
        for i in wrong:
            values[i] = 0.5
        scores[ex.id] = values
    return scores


def test_choose_sp_rule_finds_the_rule_that_fits_the_scores(sample_examples):
    examples = [ex for ex in sample_examples if len(ex.supporting_facts) == 2][:6]
    exact, f1 = choose_sp_rule(examples, _scored(examples, extra=0))
    assert f1 == 1.0 and exact == SpRule(top_k=2)  # top-k wins ties
    many = [ex for ex in sample_examples if len(ex.supporting_facts) >= 2]
    # wrong sentences at 0.5 above the gold count: only a threshold above 0.5 keeps exactly the gold ones
    rule, f1 = choose_sp_rule(many, _scored(many, extra=3))
    assert rule.top_k is None and 0.5 < rule.threshold <= 0.9 and f1 == 1.0
    assert rule_sp_f1(many, _scored(many, extra=3), SpRule(top_k=1)) < 1.0


def test_choose_sp_rule_finds_the_paragraph_rule_when_the_facts_follow_their_paragraphs(sample_examples):
    """Each gold paragraph's first fact at 0.9, its others at 0.3, one wrong sentence elsewhere at 0.5: no top-k
    and no threshold gets every fact and nothing else; the best of the 2 best paragraphs plus their sentences at
    0.3 or more does."""
    examples = [ex for ex in sample_examples if len(ex.supporting_facts) >= 3
                and len({title for title, _ in ex.supporting_facts}) == 2]
    assert len(examples) >= 3
    scores = {}
    for ex in examples:
        gold, seen, values = set(ex.supporting_facts), set(), []
        for title, i in ex.sentence_keys():
            values.append(0.0 if (title, i) not in gold else 0.3 if title in seen else 0.9)
            seen |= {title} if (title, i) in gold else set()
        wrong = next(i for i, (title, _) in enumerate(ex.sentence_keys()) if title not in seen)
        values[wrong] = 0.5
        scores[ex.id] = values
    rule, f1 = choose_sp_rule(examples, scores)
    assert rule.paragraphs == 2 and 0.0 < rule.threshold <= 0.3 and f1 == 1.0
    assert rule_sp_f1(examples, scores, SpRule(top_k=2)) < 1.0


def test_a_given_rule_wins_then_the_saved_one_then_top_2():
    saved = SpRule(threshold=0.4, paragraphs=2)
    assert SpRule().or_saved(saved) == saved
    assert SpRule().or_saved(None) == SpRule(top_k=2)
    assert SpRule(top_k=3).or_saved(saved) == SpRule(top_k=3)
    assert SpRule(threshold=0.1).or_saved(saved) == SpRule(threshold=0.1)
    assert SpRule(first=False, paragraphs=1).or_saved(saved) == SpRule(paragraphs=1)


def test_the_trained_readers_rule_is_saved_and_used_by_predict(trained_latent_run, sample_path, tmp_path):
    best = trained_latent_run / "best"
    rule = json.loads((best / "reader.json").read_text())["sp_rule"]
    evals = [json.loads(line) for line in (trained_latent_run / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]
    assert set(rule) == {"top_k", "threshold", "paragraphs", "first"} and "sp_f1_top2" in evals[-1]
    assert [row for row in evals if row.get("best")][-1]["sp_rule"] == rule  # the best evaluation's rule is saved
    args = ["predict", "--model", str(best), "--data", str(sample_path), "--limit", "6", "--max-new-tokens", "2"]
    explicit = []  # the saved rule as flags: a value after each set field, --sp-first alone
    for name, value in rule.items():
        if value not in (None, False):
            explicit += [f"--sp-{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    assert main([*args, "--out", str(tmp_path / "saved.json")]) == 0
    assert main([*args, "--out", str(tmp_path / "explicit.json"), *explicit]) == 0
    assert main([*args, "--out", str(tmp_path / "one.json"), "--sp-top-k", "1"]) == 0
    saved, explicit, one = (json.loads((tmp_path / f"{name}.json").read_text())["sp"]
                            for name in ("saved", "explicit", "one"))
    assert saved == explicit  # no flag: the saved rule
    assert all(len(facts) == 1 for facts in one.values())  # a flag overrides it
