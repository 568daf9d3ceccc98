"""`training/order.py`: the data order and dropout seeds are functions of (seed, epoch, batch, rank) alone."""
from latentqa.training.order import EpochSampler, dropout_seed


def test_each_epoch_is_a_fresh_permutation_drawn_from_seed_and_epoch_alone():
    sampler = EpochSampler(50, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == sorted(second) == list(range(50)) and first != second and len(sampler) == 50
    resumed = EpochSampler(50, seed=3)  # a resumed run sets the epoch it is in and gets the same order
    resumed.set_epoch(1)
    assert list(resumed) == second and list(EpochSampler(50, seed=4)) != first


def test_dropout_seeds_differ_by_each_coordinate_and_repeat_for_the_same():
    seeds = {dropout_seed(0, epoch, batch, rank) for epoch in range(3) for batch in range(3) for rank in range(2)}
    assert len(seeds) == 18 and dropout_seed(0, 1, 2, 1) == dropout_seed(0, 1, 2, 1)
    assert all(0 <= seed < 2**32 for seed in seeds)
