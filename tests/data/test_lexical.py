import math

import pytest

from latentqa.data.examples import Example, Paragraph
from latentqa.data.features import FeatureSpec, encode_examples, format_sentence
from latentqa.data.lexical import FEATURES, lexical_features, paragraph_links

# word ids for hand-made contexts: one id per word, so what each feature sees is plain to read
VOCAB = {}


def ids(text: str) -> list[int]:
    return [VOCAB.setdefault(word, len(VOCAB) + 1) for word in text.lower().replace(":", " :").split()]


def context(paragraphs):
    """(title, [sentences]) → pieces, title lengths, sentence_paragraph, as encode_examples makes them."""
    pieces, titles, paragraph_of = [], [], []
    for p, (title, sentences) in enumerate(paragraphs):
        for sentence in sentences:
            pieces.append(ids(format_sentence(title, sentence)))
            titles.append(len(ids(title)))
            paragraph_of.append(p)
    return pieces, titles, paragraph_of


def features(paragraphs, question):
    rows = lexical_features(*context(paragraphs), ids(question))
    return [dict(zip(FEATURES, row)) for row in rows]


PARAGRAPHS = [
    ("Will Eisner", ["The comics artist was born in Brooklyn .", "He taught with Ian Boothby ."]),  # names paragraph 1
    ("Ian Boothby", ["The writer was born in Canada ."]),
    ("Nuclear Power", ["The plant was built in the country ."]),
]


def test_the_question_named_paragraph_and_its_bridge_are_marked_and_the_distractor_is_not():
    eisner, eisner_bridge, boothby, plant = features(PARAGRAPHS, "Where was the teacher of Will Eisner born ?")
    assert eisner["title_in_question"] == pytest.approx(1.0) and boothby["title_in_question"] == 0
    # Boothby is named by the question's own paragraph: linked; the distractor is named by nobody
    assert boothby["linked_from_relevant"] > 0 and plant["linked_from_relevant"] == 0
    assert eisner_bridge["names_other_title"] == pytest.approx(1.0) and eisner["names_other_title"] == 0
    # the sentence holding the title's words covers more of the question than the distractor's
    assert eisner["sentence_cover"] > plant["sentence_cover"]
    assert eisner["paragraph_cover"] == eisner_bridge["paragraph_cover"] > plant["paragraph_cover"]
    for row in (eisner, eisner_bridge, boothby, plant):
        assert all(0 <= v <= 1 for v in row.values()), row


def test_words_in_every_paragraph_weigh_least():
    # "the" is in every paragraph, "plant" in one: covering "plant" covers more of the question's weight
    rows = features(PARAGRAPHS, "the plant")
    assert rows[3]["sentence_cover"] > 0.9 > rows[0]["sentence_cover"] > 0
    count, everywhere, once = 3, 3, 1  # IDF over the context's own paragraphs
    weight_the, weight_plant = math.log((count + 1) / (everywhere + .5)), math.log((count + 1) / (once + .5))
    assert rows[0]["sentence_cover"] == pytest.approx(weight_the / (weight_the + weight_plant))


def test_no_sentences_no_features_and_an_empty_question_covers_nothing():
    assert lexical_features([], [], [], [1, 2]) == []
    rows = features(PARAGRAPHS, "")
    assert all(row["sentence_cover"] == row["paragraph_cover"] == row["title_in_question"] == 0 for row in rows)


def test_paragraph_links_say_which_paragraph_names_which_title():
    links = paragraph_links(*context(PARAGRAPHS))
    assert links[0][1] == pytest.approx(1.0)  # Eisner's second sentence names "Ian Boothby" whole
    assert links[1][0] == 0 and links[0][2] == links[2][0] == 0  # nobody names Eisner; the plant names nobody
    assert [links[p][p] for p in range(3)] == [0, 0, 0]  # a paragraph's own title prefixes are not links
    assert paragraph_links([], [], []) == []
    # the sentence feature is the same link, weighed by the naming paragraph's relevance to the question
    rows = features(PARAGRAPHS, "Where was the teacher of Will Eisner born ?")
    relevance = (rows[0]["paragraph_cover"] + rows[0]["title_in_question"]) / 2
    assert rows[2]["linked_from_relevant"] == pytest.approx(links[0][1] * relevance)


def test_encode_examples_finds_each_title_in_the_real_tokenizer_pieces(sample_examples, tokenizers):
    t5_tok, enc_tok = tokenizers
    real = sample_examples[0]
    asked = real.paragraphs[0].title
    example = Example(id="x", question=asked, answer=real.answer, paragraphs=real.paragraphs,
                      supporting_facts=real.supporting_facts)
    cols = encode_examples([example], FeatureSpec(lexical=True), question_tokenizer=t5_tok, context_tokenizer=enc_tok,
                           progress=False)
    rows = [dict(zip(FEATURES, row)) for row in cols["sentence_lexical"][0]]
    assert len(rows) == len(example.sentence_keys())
    question = set(enc_tok(asked, add_special_tokens=False)["input_ids"])
    checked = 0
    for row, (title, _) in zip(rows, example.sentence_keys()):
        pieces = set(enc_tok(title, add_special_tokens=False)["input_ids"])
        if title == asked:  # the whole title found: its tokens end before the ": " (nothing of the sentence counted)
            assert row["title_in_question"] == pytest.approx(1.0)
        elif not pieces & question:  # a title sharing no word piece with the question
            assert row["title_in_question"] == 0
            checked += 1
    assert checked > 0
