import torch

from latentqa.readers.pooling import group_max, group_mean, masked_mean


def test_each_pooling_ignores_padding_and_empty_groups():
    values = torch.tensor([[[1.0], [3.0], [5.0], [7.0]]])  # (1, 4, 1)
    index = torch.tensor([[0, 0, 2, 2]])
    mask = torch.tensor([[True, True, True, False]])
    assert group_mean(values, index, mask, 3).flatten().tolist() == [2.0, 0.0, 5.0]
    assert masked_mean(values, mask).flatten().tolist() == [3.0]  # (1 + 3 + 5) / 3, the padding left out
    best, present = group_max(values[..., 0], index, mask, 3, empty=-1.0)
    assert best.tolist() == [[3.0, -1.0, 5.0]] and present.tolist() == [[True, False, True]]
