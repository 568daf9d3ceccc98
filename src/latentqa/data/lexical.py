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

`paragraph_links` gives the bridge itself, per pair of paragraphs: how much of one's title the other names (what
the paragraph-pair ranker, `readers/pairs.py`, weighs).
"""
from __future__ import annotations

import math
from collections import Counter

FEATURES = ("sentence_cover", "paragraph_cover", "title_in_question", "linked_from_relevant", "names_other_title")


class _Context:
    """One context's word pieces by sentence, paragraph body and title, and each piece's rarity among its
    paragraphs: what both the sentence features and the paragraph links weigh with."""

    def __init__(self, pieces: list[list[int]], title_lengths: list[int], sentence_paragraph: list[int]):
        self.count = max(sentence_paragraph) + 1
        self.whole = [set(p) for p in pieces]
        self.body = [set(p[n:]) for p, n in zip(pieces, title_lengths)]
        self.paragraphs, self.bodies, self.titles = ([set() for _ in range(self.count)] for _ in range(3))
        for s, paragraph in enumerate(sentence_paragraph):
            self.paragraphs[paragraph] |= self.whole[s]
            self.bodies[paragraph] |= self.body[s]
            self.titles[paragraph] |= set(pieces[s][:title_lengths[s]])
        frequency = Counter(t for tokens in self.paragraphs for t in tokens)
        self.absent = math.log((self.count + 1) / 0.5)  # a question word found in no paragraph
        self.rarity = {t: math.log((self.count + 1) / (n + 0.5)) for t, n in frequency.items()}

    def weight(self, tokens) -> float:
        return sum(self.rarity.get(t, self.absent) for t in tokens)

    def share(self, found: set, wanted: set) -> float:
        total = self.weight(wanted)
        return self.weight(found & wanted) / total if total > 0 else 0.0

    def links(self) -> list[list[float]]:
        """links[a][b]: share of paragraph b's title named in paragraph a's sentences (title prefixes aside)."""
        return [[self.share(self.bodies[a], self.titles[b]) if a != b else 0.0 for b in range(self.count)]
                for a in range(self.count)]


def lexical_features(pieces: list[list[int]], title_lengths: list[int], sentence_paragraph: list[int],
                     question_ids: list[int]) -> list[list[float]]:
    """pieces: each sentence's word-piece ids (its "{title}: " prefix first, `title_lengths` of them the title);
    sentence_paragraph: each sentence's paragraph → per sentence, the values of `FEATURES`."""
    if not pieces:
        return []
    context = _Context(pieces, title_lengths, sentence_paragraph)
    question, count, share = set(question_ids), context.count, context.share
    cover = [share(p, question) for p in context.paragraphs]
    named = [share(question, t) for t in context.titles]
    relevance = [(c + n) / 2 for c, n in zip(cover, named)]
    links = context.links()
    linked = [max((links[source][p] * relevance[source] for source in range(count) if source != p), default=0.0)
              for p in range(count)]
    rows = []
    for s, p in enumerate(sentence_paragraph):
        names_other = max((share(context.body[s], context.titles[other]) for other in range(count) if other != p),
                          default=0.0)
        rows.append([share(context.whole[s], question), cover[p], named[p], linked[p], names_other])
    return rows


def paragraph_links(pieces: list[list[int]], title_lengths: list[int], sentence_paragraph: list[int]
                    ) -> list[list[float]]:
    """Per pair of paragraphs (a, b), the share of b's title weight that a's sentences name (HotpotQA's bridge:
    the first gold paragraph names the second); P × P for P = max(sentence_paragraph) + 1, [] for no sentences."""
    return _Context(pieces, title_lengths, sentence_paragraph).links() if pieces else []
