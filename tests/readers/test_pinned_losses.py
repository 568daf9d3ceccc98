"""Each reader's losses on four sample questions after a fixed initialisation (the embedded tiny models, seed 0),
pinned: a change to the forward pass, the collators or the features that moves them is seen here, and a change
meant to move them updates these numbers in the same commit. The tolerance covers CPU kernels' rounding only."""
import pytest
import torch

from tests.conftest import collate

PINNED = {  # reader: (loss, answer loss, support loss)
    "latent": (10.699073, 8.245706, 2.453367),
    "baseline": (8.265837, 8.265837, None),
}


@pytest.mark.parametrize("kind", PINNED)
def test_losses_after_a_fixed_initialisation(kind, tiny_latent, tiny_baseline, sample_examples):
    reader = {"latent": tiny_latent, "baseline": tiny_baseline}[kind].eval()
    batch, _ = collate(reader, sample_examples[:4])
    with torch.no_grad():
        out = reader(batch)
    loss, answer, support = PINNED[kind]
    assert out.loss.item() == pytest.approx(loss, rel=1e-4)
    assert out.answer_loss.item() == pytest.approx(answer, rel=1e-4)
    if support is None:
        assert "support_loss" not in out.auxiliary
    else:
        assert out.auxiliary["support_loss"].item() == pytest.approx(support, rel=1e-4)
