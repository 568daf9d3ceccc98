"""The paragraph-pair ranker: which 2 paragraphs hold a question's supporting facts, from lexical evidence alone.

HotpotQA's facts come from exactly 2 of a context's paragraphs, and the pair tells more than each paragraph alone:
in a bridge question one gold paragraph names the other's title, in a comparison the question names both. A pair's
score is a weighted sum of `PAIR_FEATURES`, built from each paragraph's lexical evidence (`data.lexical`: per
feature, the most any of its sentences has) and the title links between the two. The 14 weights are fitted once,
on the training questions, by maximum likelihood of each question's gold pair among all its pairs (a softmax;
convex, full-batch L-BFGS: seconds), then kept fixed: a few free parameters fitted on 1,315 questions generalise
where a transformer over frozen states did not (docs/real.md).

Each sentence then gets its paragraph's score: the best score of a pair that holds the paragraph, so the two
paragraphs of the best pair rank first, and the paragraph rule (`evaluation.facts`) takes its sentences from them.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.lexical import FEATURES
from .heads import Evidence, EvidenceHead
from .pooling import group_max

PAIR_FEATURES = (*(f"sum_{name}" for name in FEATURES), *(f"difference_{name}" for name in FEATURES),
                 "link_larger", "link_smaller", "link_times_cover", "both_titles_in_question")
L2 = 1e-3  # a light pull to 0: the features are in [0, 2] and few; the fit is then unique


def paragraph_evidence(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per paragraph, the most each lexical feature has in any of its sentences (B, P, F), and which paragraphs
    have sentences (B, P) bool; P is the width of the batch's `paragraph_links`."""
    count = batch["paragraph_links"].shape[1]
    index = batch["sentence_paragraph"].clamp_max(count - 1)
    # the features are >= 0: 0 is "none"
    return group_max(batch["sentence_lexical"], index, batch["sentence_mask"], count, empty=0.0)


def pair_features(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """`PAIR_FEATURES` of every pair (a, b) of paragraphs (B, P, P, 14), and which pairs count (B, P, P) bool:
    a < b, both with sentences."""
    evidence, present = paragraph_evidence(batch)  # (B, P, F)
    links = batch["paragraph_links"].to(evidence.dtype)  # (B, P, P)
    a, b = evidence[:, :, None, :], evidence[:, None, :, :]  # (B, P, 1, F), (B, 1, P, F)
    cover = evidence[..., FEATURES.index("paragraph_cover")]  # (B, P)
    titled = evidence[..., FEATURES.index("title_in_question")]  # (B, P)
    forward, backward = links, links.transpose(1, 2)  # a names b, b names a
    columns = [a + b, (a - b).abs(),
               torch.maximum(forward, backward)[..., None], torch.minimum(forward, backward)[..., None],
               torch.maximum(forward * cover[:, :, None], backward * cover[:, None, :])[..., None],
               (titled[:, :, None] * titled[:, None, :])[..., None]]
    features = torch.cat([c.expand(*links.shape, c.shape[-1]) for c in columns], dim=-1)
    upper = torch.ones(links.shape[1:], dtype=torch.bool, device=links.device).triu(1)
    valid = upper & present[:, :, None] & present[:, None, :]
    return features, valid


def gold_pairs(batch: dict) -> torch.Tensor:
    """Per example, the flat index (a * P + b) of its pair of supporting paragraphs, or -1 where it has not exactly
    2 (unlabelled, or a question whose facts the data lost)."""
    count = batch["paragraph_links"].shape[1]
    index = batch["sentence_paragraph"].clamp_max(count - 1)
    support = (batch["sentence_support"] & batch["sentence_mask"]).long()
    gold = support.new_zeros(support.shape[0], count).scatter_add_(1, index, support).gt(0)  # (B, P)
    first = gold.float().argmax(dim=1)
    last = count - 1 - gold.flip(1).float().argmax(dim=1)
    return torch.where(gold.sum(dim=1) == 2, first * count + last, torch.full_like(first, -1))


class PairRanker(EvidenceHead):
    name = "pair ranker"
    reads_lexical = True
    ranks_paragraphs = True

    def __init__(self):
        super().__init__()
        # buffers, not parameters: fitted by `fit`, never by the optimizer; saved and loaded with the reader
        self.register_buffer("weights", torch.zeros(len(PAIR_FEATURES)))
        self.register_buffer("fitted", torch.tensor(False))

    def pair_scores(self, batch: dict) -> torch.Tensor:
        """Every pair's score (B, P, P); pairs that do not count get the lowest finite value."""
        features, valid = pair_features(batch)
        scores = features @ self.weights.to(features.dtype)
        return scores.masked_fill(~valid, torch.finfo(scores.dtype).min)

    @property
    def needs_fit(self) -> bool:
        return not bool(self.fitted)

    def scores(self, evidence: Evidence | None, batch: dict) -> torch.Tensor:
        """Per sentence, the best score of a pair holding its paragraph (B, S)."""
        scores = self.pair_scores(batch)
        best = torch.maximum(scores.amax(dim=2), scores.amax(dim=1))  # (B, P): as a or as b
        count = scores.shape[1]
        return best.gather(1, batch["sentence_paragraph"].clamp_max(count - 1))

    @torch.no_grad()
    def fit(self, batches) -> dict[str, float]:
        """Fit the weights on labelled collated batches; returns the fit's figures (questions used, share whose
        gold pair ranks first)."""
        data = []
        for batch in batches:
            features, valid = pair_features(batch)
            gold = gold_pairs(batch)
            keep = gold >= 0
            if keep.any():
                data.append((features[keep].flatten(1, 2).double(), valid[keep].flatten(1), gold[keep]))
        if not data:
            raise ValueError("the paragraph-pair ranker needs training questions with supporting facts in exactly "
                             "2 paragraphs; none has")
        weights = torch.zeros(len(PAIR_FEATURES), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weights], max_iter=500, line_search_fn="strong_wolfe")
        questions = sum(len(gold) for _, _, gold in data)

        def closure():
            optimizer.zero_grad()
            with torch.enable_grad():
                loss = L2 * weights.pow(2).sum()
                for features, valid, gold in data:
                    logits = (features @ weights).masked_fill(~valid, -1e9)
                    loss = loss + nn.functional.cross_entropy(logits, gold, reduction="sum") / questions
                loss.backward()
            return loss

        optimizer.step(closure)
        self.weights.copy_(weights.detach().to(self.weights.dtype))
        self.fitted.fill_(True)
        first = sum(int(((f @ weights.detach()).masked_fill(~v, -1e9).argmax(dim=1) == g).sum()) for f, v, g in data)
        return {"questions": questions, "gold_pair_first": first / questions}
