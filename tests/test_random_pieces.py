"""Random vectors drawn tensor by tensor equal the flat draw of the whole model."""

import numpy as np
import pytest
import tensorflow as tf

from keras_flat.utils import rng
from keras_flat.utils import vector

SEED = tf.constant([7, 3], tf.int64)
# Pieces straddling a Box-Muller pair and the chunk boundaries (every 2**20
# values), the flat draw's scalar tail, several chunks, empty pieces and an
# odd total.
SIZES = [
    [12, 4, 8],
    [1000, 33, 77, 5],
    [5, 0, 5],
    [1],
    [73, 1, 2, 3],
    [(1 << 20) + 17, 2048, 3 * (1 << 20) + 5, 31],
]


def _bits(array):
    return np.asarray(array, np.float32).view(np.uint32)


@pytest.mark.parametrize("sizes", SIZES, ids=str)
def test_pieces_equal_the_flat_draw_bit_for_bit(sizes):
    flat = rng.normal([sum(sizes)], SEED)
    pieces = rng.normal_pieces(sizes, SEED)
    assert [int(p.shape[0]) for p in pieces] == sizes
    np.testing.assert_array_equal(_bits(np.concatenate(pieces)), _bits(flat))


def test_pieces_equal_the_flat_draw_under_xla():
    sizes = [1000, 33, 77, 5, 4096]
    flat = tf.function(lambda: rng.normal([sum(sizes)], SEED), jit_compile=True)()
    pieces = tf.function(lambda: rng.normal_pieces(sizes, SEED), jit_compile=True)()
    np.testing.assert_array_equal(_bits(np.concatenate(pieces)), _bits(flat))


def test_normal_like_is_the_flat_draw_split_into_the_tensors():
    like = [tf.zeros((30, 7)), tf.zeros((7,)), tf.zeros((7, 3, 2)), tf.zeros(())]
    sizes = [210, 7, 42, 1]
    flat = np.asarray(rng.normal([sum(sizes)], SEED))
    expected = np.split(flat, np.cumsum(sizes)[:-1])
    drawn = vector.normal_like(like, SEED)
    for got, want, t in zip(drawn, expected, like):
        assert got.shape == t.shape
        np.testing.assert_array_equal(_bits(np.ravel(got)), _bits(want))
    # The sphere sample normalises that draw: same direction, norm rho.
    sphere = vector.sphere_like(like, SEED, 0.3)
    np.testing.assert_allclose(np.concatenate([np.ravel(s) for s in sphere]),
                               0.3 * flat / np.linalg.norm(flat.astype(np.float64)),
                               rtol=1e-5, atol=1e-8)
