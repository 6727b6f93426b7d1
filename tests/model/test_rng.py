from __future__ import annotations

import numpy as np
import pytest

from fasttrap.ops import _loader
from fasttrap.model import rng


@pytest.mark.parametrize("stream", [0, 1, 2**64 - 1, rng.stream_id(3, "inner", 7)])
@pytest.mark.parametrize("epoch", [0, 1, 57])
@pytest.mark.parametrize("N", [1, 2, 1000, 60000])
def test_core_permutation_equals_numpy_twin(stream, epoch, N):
    a = rng.epoch_perm(stream, epoch, N)
    b = _loader.core.epoch_perm(stream, epoch, N)
    np.testing.assert_array_equal(a, b)
    assert np.array_equal(np.sort(a), np.arange(N))


def test_streams_differ_by_seed_stage_and_index():
    ids = {rng.stream_id(s, st, i) for s in range(3) for st in ("outer", "inner") for i in range(4)}
    assert len(ids) == 24
    with pytest.raises(ValueError, match="stage"):
        rng.stream_id(0, "warmup")


def test_batches_cover_each_epoch_once():
    N, B = 1000, 128
    spe = rng.steps_per_epoch(N, B)
    assert spe == 8
    idx = np.concatenate([rng.batch_indices(5, s, N, B) for s in range(spe)])
    assert np.array_equal(np.sort(idx), np.arange(N))
    assert len(rng.batch_indices(5, spe - 1, N, B)) == N - 7 * B
    assert not np.array_equal(rng.batch_indices(5, 0, N, B), rng.batch_indices(5, spe, N, B))  # new epoch
    assert rng.steps_per_epoch(N, B, drop_last=True) == 7
