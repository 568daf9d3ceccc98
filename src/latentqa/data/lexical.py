"""Lexical evidence for supporting facts, per context sentence, from word-piece ids alone.

A frozen sentence encoder blurs names: "Will Eisner" and "Ian Boothby" are both "a person". HotpotQA's questions
name the entities of their gold paragraphs, and its bridge questions reach the second paragraph through a title the
first one names. Five features in [0, 1] per sentence say so exactly (`FEATURES`):

    sentence_cover        share of the question's weight found in the sentence (its "{title}:" prefix included)
    paragraph_cover       the same over the sentence's whole paragraph
    title_in_question     share of the paragraph's title weight found in the question
    linked_from_relevant  the most any other paragraph names this paragraph's title in its sentences, times that
                          paragraph's relevance (cover + title, halved)
    names_other_title     the most this sentence names another paragraph's title (the bridge sentence)

A word piece weighs its rarity among the context's own paragraphs, log((P + 1) / (df + 0.5)), so "the" weighs
almost nothing and a name in one paragraph much: no corpus statistics to compute or save, the same features in
training and serving. Nothing here depends on encoder states, so cached context states stay valid.
"""
from __future__ import annotations

import math
from collections import Counter

FEATURES = ("sentence_cover", "paragraph_cover", "title_in_question", "linked_from_relevant", "names_other_title")


def lexical_features(pieces: list[list[int]], title_lengths: list[int], sentence_paragraph: list[int],
                     question_ids: list[int]) -> list[list[float]]:
    """pieces: each sentence's word-piece ids (its "{title}: " prefix first, `title_lengths` of them the title);
    sentence_paragraph: each sentence's paragraph → per sentence, the values of `FEATURES`."""
    if not pieces:
        return []
    count = max(sentence_paragraph) + 1
    whole = [set(p) for p in pieces]
    body = [set(p[n:]) for p, n in zip(pieces, title_lengths)]
    paragraphs, bodies, titles = ([set() for _ in range(count)] for _ in range(3))
    for s, paragraph in enumerate(sentence_paragraph):
        paragraphs[paragraph] |= whole[s]
        bodies[paragraph] |= body[s]
        titles[paragraph] |= set(pieces[s][:title_lengths[s]])
    frequency = Counter(t for tokens in paragraphs for t in tokens)
    absent = math.log((count + 1) / 0.5)  # a question word found in no paragraph
    rarity = {t: math.log((count + 1) / (n + 0.5)) for t, n in frequency.items()}

    def weight(tokens) -> float:
        return sum(rarity.get(t, absent) for t in tokens)

    def share(found: set, wanted: set) -> float:
        total = weight(wanted)
        return weight(found & wanted) / total if total > 0 else 0.0

    question = set(question_ids)
    cover = [share(p, question) for p in paragraphs]
    named = [share(question, t) for t in titles]
    relevance = [(c + n) / 2 for c, n in zip(cover, named)]
    linked = [max((share(bodies[source], titles[p]) * relevance[source] for source in range(count) if source != p),
                  default=0.0) for p in range(count)]
    rows = []
    for s, p in enumerate(sentence_paragraph):
        names_other = max((share(body[s], titles[other]) for other in range(count) if other != p), default=0.0)
        rows.append([share(whole[s], question), cover[p], named[p], linked[p], names_other])
    return rows
