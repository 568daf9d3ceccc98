"""`data/stats.py`: lengths and the share of examples a cut would rob of a supporting token, from known rows."""
import pytest

from latentqa.data.examples import Example, Paragraph
from latentqa.data.stats import data_stats, format_stats, support_end


def test_support_ends_one_past_its_last_token():
    assert support_end([0, 1, 1, 0, 1, 0]) == 5 and support_end([0, 0]) == 0 and support_end([]) == 0


def test_stats_count_the_examples_a_cut_robs_of_support():
    examples = [Example(id=str(i), question="q", paragraphs=(Paragraph("T", ("s.",)),), answer=None if i == 3 else "a",
                        type="bridge" if i else "comparison", level="hard") for i in range(4)]
    support = [[0] * 600 + [1] + [0] * 99,  # support past 512, before 1,024
               [1] + [0] * 1999,  # support at the start only
               [0] * 1100 + [1],  # support past 1,024
               [0] * 300]  # no support: not counted in the shares
    stats = data_stats(examples, {"context_ids": [[7] * len(s) for s in support], "support": support})
    assert stats["examples"] == 4 and stats["labelled"] == 3 and stats["examples_with_support"] == 3
    assert stats["context_tokens"] == pytest.approx({"mean": 1025.25, "p50": 900.5, "p95": 1865.15, "max": 2000})
    assert stats["lose_support_if_cut_at"] == {"512": 2 / 3, "1024": 1 / 3}
    assert stats["types"] == {"comparison": 1, "bridge": 3} and stats["levels"] == {"hard": 4}
    text = format_stats(stats)
    assert "cut at   512 tokens loses a supporting sentence in 67% of 3 examples" in text and "bridge 3" in text
