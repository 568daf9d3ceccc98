"""`data/corpus.py`: a corpus file's distinct paragraphs, what was left out counted, a broken line named."""
import json

import pytest

from latentqa.cli import main
from latentqa.data.corpus import load_corpus, split_sentences


def test_corpus_files_load_with_counts_or_stop_on_the_line(tmp_path):
    lines = [{"title": "A", "sentences": ["One.", "Two."]}, {"title": "B", "text": "Three. Four five."},
             {"title": "A", "sentences": ["Another text."]}, {"title": "C", "sentences": ["", "  "]},
             {"title": "B", "text": "Three. Four five."}]
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    paragraphs, report = load_corpus(str(path))
    assert [(p.title, p.sentences) for p in paragraphs] == [("A", ("One.", "Two.")), ("B", ("Three.", "Four five."))]
    assert {kind.split(" ")[0]: titles for kind, titles in report.left_out.items()} == {"empty": ["C"], "a": ["A"]}
    path.write_bytes(path.read_bytes() + b'{"title": "D", "text": "caf\xe9"}\n')
    with pytest.raises(Exception, match=r"corpus.jsonl, line 7: not UTF-8"):
        load_corpus(str(path))
    path.write_text(json.dumps(lines[0]) + "\n" + json.dumps(lines[1])[:20])
    with pytest.raises(Exception, match=r"corpus.jsonl, line 2: not valid JSON.*truncated"):
        load_corpus(str(path))
    assert main(["index", "--model", "nowhere", "--data", str(path), "--out", str(tmp_path / "i")]) == 2


def test_a_text_is_split_into_sentences_before_a_capital_digit_or_quote():
    assert split_sentences("It formed in 1991. Noel left.  \"Yes!\" 2 more? (A) b.") == \
        ["It formed in 1991.", "Noel left.", "\"Yes!\"", "2 more?", "(A) b."]
    assert split_sentences("e.g. a lower case word stays. ") == ["e.g. a lower case word stays."]
