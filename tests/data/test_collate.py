import numpy as np
import pytest
import torch

from latentqa.data.collate import BaselineCollator, LatentCollator, sentence_flags, sentence_positions
from latentqa.data.windows import PACKINGS

CLS, SEP, PAD, EOS, T5_PAD = 101, 102, 0, 1, 0


def _row(index, sentence_lengths, paragraphs, supporting, question=(7, 8)):
    """A feature row of distinct context ids (1000 + position), sentence s of `sentence_lengths[s]` tokens in
    paragraph `paragraphs[s]`; the sentences in `supporting` are supporting facts."""
    sentence_index = np.repeat(np.arange(len(sentence_lengths)), sentence_lengths)
    tokens = len(sentence_index)
    return {"index": index, "labels": [5, EOS], "question_ids": list(question), "context_question_ids": [30, 31],
            "context_ids": (1000 + np.arange(tokens)).tolist(), "sentence_index": sentence_index.tolist(),
            "sentence_paragraph": list(paragraphs), "support": np.isin(sentence_index, supporting).tolist(),
            "answer_span": [False] * tokens, "token_start": [0] * tokens, "token_end": [1] * tokens,
            "answer_start": [False] * tokens, "answer_end": [False] * tokens, "answer_type": 0}


ROWS = [_row(0, [3, 4, 2, 5], [0, 0, 1, 1], [1, 3]), _row(1, [6], [0], [])]


@pytest.mark.parametrize("packing", PACKINGS)
@pytest.mark.parametrize("question_in_windows", [False, True])
def test_every_context_token_is_found_where_its_window_holds_it(packing, question_in_windows):
    collate = LatentCollator(T5_PAD, EOS, PAD, CLS, SEP, window_tokens=9, question_in_windows=question_in_windows,
                             packing=packing)
    batch = collate(ROWS)
    flat = batch["window_ids"].flatten()
    for b, row in enumerate(ROWS):
        n = len(row["context_ids"])
        assert flat[batch["context_index"][b, :n]].tolist() == row["context_ids"]
        assert batch["context_mask"][b].sum() == n
    assert batch["window_ids"].shape[1] <= 9  # no window past the encoder's positions
    assert (batch["window_ids"][:, 0] == CLS).all()
    head = [CLS, 30, 31, SEP] if question_in_windows else [CLS]
    assert batch["window_ids"][0, :len(head)].tolist() == head


def test_windows_hold_one_sentence_one_paragraph_or_as_many_paragraphs_as_fit():
    by_sentence = LatentCollator(T5_PAD, EOS, PAD, CLS, SEP, window_tokens=9, packing="sentence")(ROWS[:1])
    assert by_sentence["window_mask"].sum(dim=1).tolist() == [3 + 2, 4 + 2, 2 + 2, 5 + 2]  # [CLS] and [SEP] each
    greedy = LatentCollator(T5_PAD, EOS, PAD, CLS, SEP, window_tokens=16, packing="greedy")(ROWS[:1])
    assert greedy["window_mask"].sum(dim=1).tolist() == [14 + 2]
    by_paragraph = LatentCollator(T5_PAD, EOS, PAD, CLS, SEP, window_tokens=16, packing="paragraph")(ROWS[:1])
    assert by_paragraph["window_mask"].sum(dim=1).tolist() == [7 + 2, 7 + 2]


def test_sentence_fields_and_a_cut_context():
    batch = LatentCollator(T5_PAD, EOS, PAD, CLS, SEP, window_tokens=9)(ROWS)
    assert batch["sentence_support"][0].tolist() == [False, True, False, True]
    assert batch["sentence_position"][0].tolist() == [0, 1, 0, 1]
    assert batch["num_sentences"].tolist() == [4, 1] and batch["sentence_mask"].sum().item() == 5
    assert batch["question_ids"][0].tolist() == [7, 8, EOS]
    assert batch["labels"].tolist() == [[5, EOS], [5, EOS]]
    cut = LatentCollator(T5_PAD, EOS, PAD, CLS, SEP, window_tokens=9, max_context_tokens=8)(ROWS[:1])
    assert cut["context_mask"].sum() == 8 and cut["support"][0].sum() == 4  # sentence 1's 4 tokens; 3's are cut
    assert cut["sentence_mask"][0].tolist() == [True, True, True, False]  # sentence 3 is past the cut
    assert cut["sentence_support"][0].tolist() == [False, True, False, False]  # a fact past the cut is not seen


def test_baseline_input_fits_the_limit_and_ends_with_eos():
    collate = BaselineCollator(T5_PAD, EOS, context_prefix=[40, 41], max_input_tokens=10)
    batch = collate(ROWS)
    # question (2) + "context:" (2) + 5 context tokens + EOS = 10
    assert batch["input_ids"][0].tolist() == [7, 8, 40, 41, 1000, 1001, 1002, 1003, 1004, EOS]
    assert batch["context_kept"].tolist() == [5, 5]
    whole = BaselineCollator(T5_PAD, EOS, context_prefix=[40, 41], max_input_tokens=None)(ROWS)
    assert whole["context_kept"].tolist() == [14, 6] and whole["attention_mask"].sum(dim=1).tolist() == [19, 11]


def test_sentence_flags_and_positions():
    assert sentence_flags(ROWS[0]).tolist() == [0, 1, 0, 1]
    assert sentence_positions([0, 1, 1, 1, 2, 2]) == [0, 0, 1, 2, 0, 1]
    assert torch.equal(torch.as_tensor(sentence_positions([])), torch.as_tensor([]))
