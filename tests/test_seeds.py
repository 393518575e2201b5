"""seed_stream is part of every stored run's results: its values and the batches it orders are pinned."""

import torch

from sparsegap.schedule import _generator
from sparsegap.seeds import seed_stream
from sparsegap.train import epoch_permutation


def test_seed_stream_values_are_pinned():
    assert seed_stream(3, 5) == 3_000_014
    assert seed_stream(0, 0) == 0
    assert seed_stream(1, 0) == 1_000_003
    assert seed_stream(2**32 - 1, 13) == (2**32 - 1) * 1_000_003 + 13


def test_streams_of_neighbouring_seeds_do_not_meet():
    streams = {seed: {seed_stream(seed, salt) for salt in range(1000)} for seed in range(5)}
    for a in range(5):
        for b in range(a + 1, 5):
            assert not streams[a] & streams[b]


def test_epoch_permutation_is_unchanged():
    for seed, epoch in ((0, 0), (1, 3), (7, 249)):
        literal = torch.randperm(100, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        assert torch.equal(epoch_permutation(100, seed, epoch), literal)


def test_schedule_generator_is_unchanged():
    a = torch.rand(5, generator=_generator(4, 2, 9))
    b = torch.rand(5, generator=torch.Generator().manual_seed((4 * 1_000_003 + 2) * 31 + 9))
    assert torch.equal(a, b)
