import numpy as np
import pytest

from latentqa.config import ConfigError
from latentqa.data.features import FeatureSpec, answer_token_mask, encode_examples, format_sentence, load_features
from latentqa.data.stats import data_stats, support_end


def _encode(examples, tokenizers, spec=FeatureSpec()):
    t5_tok, enc_tok = tokenizers
    return encode_examples(examples, spec, question_tokenizer=t5_tok, context_tokenizer=enc_tok, progress=False)


def test_support_mask_selects_exactly_the_supporting_sentences(sample_examples, tokenizers):
    _, enc_tok = tokenizers
    cols = _encode(sample_examples, tokenizers)
    for i, ex in enumerate(sample_examples):
        ids = np.array(cols["context_ids"][i])
        support = np.array(cols["support"][i], dtype=bool)
        # The supporting sentences, tokenized on their own in reading order, are exactly the masked tokens.
        facts = set(ex.supporting_facts)
        expected = [t for p in ex.paragraphs for j, s in enumerate(p.sentences) if (p.title, j) in facts
                    for t in enc_tok(format_sentence(p.title, s), add_special_tokens=False)["input_ids"]]
        assert ids[support].tolist() == expected, ex.id
        decoded = enc_tok.decode(ids[support].tolist())
        first_title, first_sent = next((p.title, p.sentences[j]) for p in ex.paragraphs
                                       for j in range(len(p.sentences)) if (p.title, j) in facts)
        assert enc_tok.decode(enc_tok(format_sentence(first_title, first_sent),
                                      add_special_tokens=False)["input_ids"]) in decoded


def test_answer_span_marks_the_answer_inside_supporting_sentences_only(sample_examples, tokenizers):
    _, enc_tok = tokenizers
    cols = _encode(sample_examples, tokenizers)
    spans = 0
    for i, ex in enumerate(sample_examples):
        ids = np.array(cols["context_ids"][i])
        span, support = np.array(cols["answer_span"][i], dtype=bool), np.array(cols["support"][i], dtype=bool)
        assert len(span) == len(ids) and not (span & ~support).any(), ex.id
        if ex.answer.lower() in ("yes", "no"):
            assert not span.any(), ex.id
        elif span.any():  # the answer as written in a supporting sentence (some are paraphrased there)
            spans += 1
            answer = enc_tok.decode(enc_tok(ex.answer, add_special_tokens=False)["input_ids"])  # as normalised
            assert answer.replace(" ", "") in enc_tok.decode(ids[span].tolist()).replace(" ", ""), ex.id
    assert spans >= 30  # most real answers are spans of their supporting facts


def test_a_tokenizer_without_offsets_is_refused_by_name(sample_examples, tokenizers):
    t5_tok, _ = tokenizers

    class SlowTokenizer:
        is_fast, name_or_path = False, "some/python-only-tokenizer"

    with pytest.raises(ConfigError, match="some/python-only-tokenizer"):
        _encode(sample_examples[:1], (t5_tok, SlowTokenizer()))


def test_answer_token_mask_matches_whole_words_in_any_case():
    text = "Amberley: the amber room, AMBER light."
    offsets = [(0, 8), (8, 9), (10, 13), (14, 19), (20, 24), (24, 25), (26, 31), (32, 37), (37, 38)]
    assert answer_token_mask(text, offsets, "amber") == [0, 0, 0, 1, 0, 0, 1, 0, 0]
    assert answer_token_mask(text, offsets, "amber room") == [0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert answer_token_mask("yes, no", [(0, 3), (5, 7)], "yes") == [0, 0]
    assert answer_token_mask(text, offsets, None) == [0] * len(offsets)


def test_token_to_sentence_map_covers_every_token_in_order(sample_examples, tokenizers):
    cols = _encode(sample_examples[:5], tokenizers)
    for i, ex in enumerate(sample_examples[:5]):
        index = np.array(cols["sentence_index"][i])
        assert len(index) == len(cols["context_ids"][i])
        assert np.all(np.diff(index) >= 0)  # reading order
        assert set(index.tolist()) <= set(range(len(ex.sentence_keys())))
        para = np.array(cols["sentence_paragraph"][i])[index]
        assert para[0] == 0 and para[-1] == len(ex.paragraphs) - 1


def test_nothing_is_truncated_and_questions_answers_are_bounded(sample_examples, tokenizers):
    t5_tok, enc_tok = tokenizers
    cols = _encode(sample_examples, tokenizers)
    ex = sample_examples[3]
    n_tokens = sum(len(enc_tok(format_sentence(p.title, s), add_special_tokens=False)["input_ids"])
                   for p in ex.paragraphs for s in p.sentences)
    assert len(cols["context_ids"][3]) == n_tokens > 300
    assert max(map(len, cols["question_ids"])) <= 63
    assert all(labels[-1] == t5_tok.eos_token_id for labels in cols["labels"])


def test_features_are_cached_and_reused(tmp_path, sample_examples, tokenizers, monkeypatch):
    t5_tok, enc_tok = tokenizers
    kw = dict(question_tokenizer=t5_tok, context_tokenizer=enc_tok, cache_dir=tmp_path, progress=False)
    first = load_features(sample_examples[:4], FeatureSpec(), **kw)
    assert len(list(tmp_path.glob("features-*"))) == 1

    import latentqa.data.features as features

    monkeypatch.setattr(features, "encode_examples", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    again = load_features(sample_examples[:4], FeatureSpec(), **kw)  # would raise if it tokenized again
    assert again["context_ids"] == first["context_ids"]
    monkeypatch.undo()
    load_features(sample_examples[:4], FeatureSpec(max_answer_tokens=16), **kw)  # another spec: a new entry
    load_features(sample_examples[:4], FeatureSpec(lexical=True), **kw)
    assert len(list(tmp_path.glob("features-*"))) == 3


def test_lexical_evidence_is_built_only_when_the_spec_asks(sample_examples, tokenizers, monkeypatch):
    import latentqa.data.features as features

    calls = []
    for name in ("lexical_features", "paragraph_links"):
        real = getattr(features, name)
        monkeypatch.setattr(features, name, lambda *a, _real=real, **k: calls.append(1) or _real(*a, **k))
    plain = _encode(sample_examples[:3], tokenizers)
    assert not calls and not {"sentence_lexical", "paragraph_links"} & set(plain)
    lexical = _encode(sample_examples[:3], tokenizers, FeatureSpec(lexical=True))
    assert len(calls) == 6 and len(lexical["sentence_lexical"]) == 3 and len(lexical["paragraph_links"]) == 3
    assert all(lexical[name] == plain[name] for name in plain)  # the rest is the same


def test_stats_on_the_real_sample(sample_examples):
    from transformers import AutoTokenizer

    from latentqa.assets import pretrained_encoder_path

    tok = AutoTokenizer.from_pretrained(pretrained_encoder_path())  # distilbert-base-uncased's vocabulary
    cols = encode_examples(sample_examples, FeatureSpec(), question_tokenizer=tok, context_tokenizer=tok,
                           progress=False)
    stats = data_stats(sample_examples, cols)
    assert stats["examples"] == 53 and stats["types"] == {"comparison": 14, "bridge": 39}
    # The brief measured ~1,490 mean tokens and 87% / 49% lost at 512 / 1,024 on the full dev set.
    assert 1300 < stats["context_tokens"]["mean"] < 1700 and stats["context_tokens"]["max"] > 2500
    assert 0.8 < stats["lose_support_if_cut_at"]["512"] <= 1.0
    assert 0.4 < stats["lose_support_if_cut_at"]["1024"] < 0.7


def test_support_end():
    assert support_end([0, 0, 1, 1, 0]) == 4 and support_end([0, 0]) == 0 and support_end([]) == 0
