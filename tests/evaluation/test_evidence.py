"""`latentqa eval --evidence`: each evidence head alone, under fixed rules."""
import json

from latentqa.cli import main


def test_the_selector_head_alone_scores_what_predict_gives_from_the_same_attention(trained_latent_run, sample_path,
                                                                                   tmp_path):
    """The tiny run's reader scores sentences by the selector's attention: the head table's top-2 figure must equal
    `eval --sp-top-k 2`'s own sp scores, computed by another path (generate, gather, record)."""
    best = str(trained_latent_run / "best")
    common = ["--model", best, "--data", str(sample_path), "--limit", "8", "--max-new-tokens", "2",
              "--cache-dir", str(tmp_path / "cache"), "--sp-top-k", "2"]
    assert main(["eval", *common, "--out-dir", str(tmp_path / "eval"), "--evidence"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    heads = metrics["evidence"]["heads"]
    assert set(heads) == {"selector attention"}  # no scorer, no lexical evidence, no ranker in this reader
    assert heads["selector attention"]["top2"] == {"sp_em": metrics["sp_em"], "sp_f1": metrics["sp_f1"]}
    assert 0 < metrics["evidence"]["attention_on_support"] < 1
