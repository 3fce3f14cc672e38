"""The counter-based generator of keras_flat.utils.rng, against an independent NumPy version.

The NumPy version is written from the definitions: Philox-4x32-10 (Salmon,
Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011),
TensorFlow's derivation of a Philox key and counter from a seed of two
integers (one Philox round over the seed with a fixed key), the package's
MurmurHash3-based `fold_in`, and the transforms the module docstring states.

What is asserted is what docs and docstrings claim: the raw bits, and the
uniforms, signs and folded seeds built from them, are bit-identical eagerly,
in a `tf.function` and under XLA, and equal to the NumPy re-implementation
below; the Box-Muller normals, which go through float32 log/sqrt/cos/sin that
XLA implements differently, agree with and without XLA to 1e-6 and with the
float64 transform of the same uniforms to 4e-6. The laws are checked by
Kolmogorov-Smirnov tests, and the streams of different seeds and of
`fold_in` with different data by correlations, shared values and the laws of
their differences. Every seed below is fixed, so each test is deterministic.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from keras_flat.utils import rng

# --- An independent NumPy version of the generator, written from its definition.

_M32 = np.uint64(0xFFFFFFFF)


def _np_mul(a, b):
    return ((np.asarray(a, np.uint64) * np.uint64(b)) & _M32).astype(np.uint32)


def _np_add(a, b):
    return ((np.asarray(a, np.uint64) + np.asarray(b, np.uint64)) & _M32).astype(np.uint32)


def _np_mix(h):
    h = np.asarray(h, np.uint32)
    h = h ^ (h >> np.uint32(16))
    h = _np_mul(h, 0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = _np_mul(h, 0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _np_to_u32(value):
    value = np.asarray(value)
    if value.dtype == np.uint32:
        return value
    wide = value.astype(np.int64)
    low = (wide & 0xFFFFFFFF).astype(np.uint32)
    high = ((wide >> 32) & 0xFFFFFFFF).astype(np.uint32)  # Arithmetic shift, as in TF.
    return low ^ _np_mix(high)


def np_fold_in(seed, data):
    k = _np_to_u32(seed)
    d = _np_mix(_np_add(_np_mul(_np_to_u32(data), 0x9E3779B9), 0x6A09E667))
    first = _np_mix(k[0] ^ d)
    second = _np_mix(_np_mix(_np_add(k[1], d)) ^ np.uint32(0xC2B2AE35))
    return np.array([first, second], np.uint32)


_PHILOX_M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_PHILOX_W = (np.uint64(0x9E3779B9), np.uint64(0xBB67AE85))


def _np_philox(counter, key):
    """Philox-4x32-10: four uint32 words of counters (arrays) under a two-word key."""
    c = [np.asarray(w, np.uint64) for w in counter]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for _ in range(10):
        p0, p1 = _PHILOX_M[0] * c[0], _PHILOX_M[1] * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & _M32,
             (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & _M32]
        k0, k1 = (k0 + _PHILOX_W[0]) & _M32, (k1 + _PHILOX_W[1]) & _M32
    return c


def _np_key_counter(seed):
    """TensorFlow's Philox key and counter high words for a seed of two integers."""
    s0, s1 = (int(v) % 2**64 for v in _np_to_u32(seed).astype(np.int64))
    words = [s0 & 0xFFFFFFFF, s0 >> 32, s1 & 0xFFFFFFFF, s1 >> 32]
    mixed = [int(w) for w in _np_philox(words, (0x3EC8F720, 0x02461E29))]
    return mixed[:2], mixed[2:]


def np_bits(size, seed):
    """Stream value `4i + j` is word `j` of Philox at counter `i` (low words first)."""
    key, high = _np_key_counter(seed)
    i = np.arange((size + 3) // 4, dtype=np.uint64)
    ones = np.ones_like(i)
    words = _np_philox([i & _M32, i >> np.uint64(32), ones * high[0], ones * high[1]], key)
    return np.stack(words, 1).reshape(-1).astype(np.uint32)[:size]


def np_uniform(size, seed):
    return (np_bits(size, seed) >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)


def np_rademacher(size, seed):
    """Sign `i` is +1 where bit `i % 32` of stream value `i // 32` is set."""
    words = np_bits((size + 31) // 32, seed)
    bit = (words[:, None] >> np.arange(32, dtype=np.uint32)[None, :]) & np.uint32(1)
    return (2.0 * bit.astype(np.float32) - 1.0).reshape(-1)[:size]


def np_normal64(size, seed, chunk=2**19):
    """The Box-Muller transform of the generator's uniforms, in float64: chunk
    `c` of `chunk` pairs holds its pairs' cosines, then their sines, with
    the radii from the uniforms of seed `fold_in(seed, 2c)` and the angles
    from those of `fold_in(seed, 2c + 1)`."""
    pairs, out = (size + 1) // 2, []
    for c, lo in enumerate(range(0, pairs, chunk)):
        length = min(chunk, pairs - lo)

        def uniforms(stream, length=length):
            raw = np_bits(length, np_fold_in(seed, np.int64(stream))) >> np.uint32(8)
            return raw.astype(np.float64) * 2.0**-24

        radius = np.sqrt(-2.0 * np.log(uniforms(2 * c) + 2.0**-24))
        angle = 2.0 * np.pi * uniforms(2 * c + 1)
        out.append(np.concatenate([radius * np.cos(angle), radius * np.sin(angle)]))
    return np.concatenate(out)[:size]


SEEDS = [
    np.array([0, 0], np.int64),
    np.array([1, 2], np.int32),
    np.array([123456789, -987654321], np.int64),
    np.array([2**40 + 5, -(2**33)], np.int64),
    np.array([0xFFFFFFFF, 7], np.uint32),
]
N = 65_537  # Odd, so the last normal uses only the cosine of its pair.


def _draws(seed, data):
    return (rng.bits([N], seed), rng.uniform([N], seed), rng.rademacher([N], seed),
            rng.normal([N], seed), rng.fold_in(seed, data))


_GRAPH = tf.function(_draws)
_XLA = tf.function(_draws, jit_compile=True)


def _three_ways(seed, data):
    """`_draws` eagerly, in a tf.function, and in a tf.function with XLA."""
    args = (tf.constant(seed), tf.constant(data, tf.int64))
    return [[t.numpy() for t in run(*args)] for run in (_draws, _GRAPH, _XLA)]


@pytest.mark.compat
def test_bits_uniforms_signs_and_fold_in_are_bit_identical_with_and_without_xla_and_to_numpy():
    for seed, data in zip(SEEDS, [0, 1, 2**31 - 1, -3, 2**45 + 1]):
        expected = [np_bits(N, seed), np_uniform(N, seed), np_rademacher(N, seed),
                    np_fold_in(seed, np.int64(data))]
        for bits, uniform, rademacher, _, folded in _three_ways(seed, data):
            for got, want in zip([bits, uniform, rademacher, folded], expected):
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got, want)
    # A Python int as `data` is the same as the tensor.
    np.testing.assert_array_equal(rng.fold_in(tf.constant(SEEDS[2]), 7).numpy(),
                                  np_fold_in(SEEDS[2], np.int64(7)))


@pytest.mark.compat
def test_normals_agree_with_xla_to_1e6_and_with_float64_box_muller_to_4e6():
    for seed in SEEDS[:3]:
        (_, _, _, eager, _), (_, _, _, graph, _), (_, _, _, xla, _) = _three_ways(seed, 0)
        np.testing.assert_array_equal(eager, graph)
        reference = np_normal64(N, seed)
        assert np.max(np.abs(graph - reference)) <= 4e-6
        assert np.max(np.abs(xla - reference)) <= 4e-6
        assert np.max(np.abs(xla - graph)) <= 1e-6


def test_a_draw_of_several_chunks_is_their_box_muller_transform():
    size = 3 * 2**19 + 7  # Two chunks of 2**19 pairs, and a part of a third.
    z = rng.normal([size], tf.constant(SEEDS[3])).numpy()
    assert np.max(np.abs(z - np_normal64(size, SEEDS[3]))) <= 4e-6


def test_shapes_and_dtypes_follow_the_arguments():
    seed = tf.constant([3, 4])
    flat = np_bits(24, seed.numpy())
    np.testing.assert_array_equal(rng.bits([2, 3, 4], seed).numpy(), flat.reshape(2, 3, 4))
    assert rng.uniform((2, 3), seed, tf.float64).dtype == tf.float64
    np.testing.assert_array_equal(rng.uniform((2, 3), seed, tf.float64).numpy(),
                                  np_uniform(6, seed.numpy()).reshape(2, 3))
    assert rng.rademacher((), seed).shape == ()
    assert rng.normal([5, 1], seed, tf.float16).dtype == tf.float16
    assert rng.bits([0], seed).shape == (0,)
    # A normal of odd size is the next even size's draw without its last sine.
    np.testing.assert_array_equal(rng.normal([1], seed).numpy(),
                                  rng.normal([2], seed).numpy()[:1])


def test_uniforms_follow_the_uniform_law_on_24_bit_grid():
    u = rng.uniform([1_000_000], tf.constant([11, 12])).numpy().astype(np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0
    np.testing.assert_array_equal(u * 2**24, np.floor(u * 2**24))
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    # Each 1/64 bin holds its share (chi-square), so no region is missing.
    counts = np.bincount((u * 64).astype(int), minlength=64)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_bits_are_balanced_in_every_position():
    b = rng.bits([200_000], tf.constant([21, 22])).numpy()
    ones = np.array([np.count_nonzero((b >> np.uint32(i)) & np.uint32(1)) for i in range(32)])
    # Binomial(200000, 1/2) has sd 224; 5 sd over 32 positions fails by chance ~1e-5.
    assert np.all(np.abs(ones - 100_000) < 5 * 224)


def test_normals_follow_the_standard_normal_law():
    z = rng.normal([1_000_001], tf.constant([31, 32])).numpy().astype(np.float64)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(z.mean()) < 5 / 1000 and abs(z.var() - 1.0) < 5 * np.sqrt(2) / 1000
    # The cosines and sines of the Box-Muller pairs are independent normals
    # (one chunk: the pairs' cosines, then their sines).
    pairs = (len(z) + 1) // 2
    assert abs(np.corrcoef(z[:pairs - 1], z[pairs:])[0, 1]) < 5 / np.sqrt(pairs)
    # Tails: the probability of |z| > 3 is 0.0027.
    tail = np.count_nonzero(np.abs(z) > 3)
    assert stats.binomtest(tail, len(z), 2 * stats.norm.sf(3)).pvalue > 1e-3


def test_signs_are_fair_coins():
    s = rng.rademacher([1_000_000], tf.constant([41, 42])).numpy()
    assert set(np.unique(s)) == {-1.0, 1.0}
    assert stats.binomtest(int(np.sum(s > 0)), len(s), 0.5).pvalue > 1e-3
    # Consecutive signs are independent.
    assert abs(np.mean(s[1:] * s[:-1])) < 5 / 1000


def _streams():
    """Uniform streams of related seeds: fold_in with different data, and nearby seeds."""
    base = tf.constant([5, 6])
    seeds = [rng.fold_in(base, d) for d in range(4)]
    seeds += [tf.constant(s) for s in ([5, 7], [6, 6], [0, 0], [0, 1], [1, 0])]
    seeds.append(rng.fold_in(rng.fold_in(base, 0), 0))
    return seeds


def test_streams_of_different_seeds_are_uncorrelated_and_share_no_values():
    n = 100_000
    streams = [rng.bits([n], s).numpy() for s in _streams()]
    uniforms = [(b >> np.uint32(8)).astype(np.float64) / 2**24 for b in streams]
    sets = [set(b.tolist()) for b in streams]
    for i in range(len(streams)):
        for j in range(i + 1, len(streams)):
            for lag in (-2, -1, 0, 1, 2):  # A stream shifted by a few counters would show here.
                a = uniforms[i][max(lag, 0): n + min(lag, 0)]
                b = uniforms[j][max(-lag, 0): n - max(lag, 0)]
                assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n), (i, j, lag)
            # Two independent streams of n values in 2^32 share about n²/2^32 = 2.3 of
            # them; overlapping streams would share a large fraction.
            assert len(sets[i] & sets[j]) < 20, (i, j)


def test_differences_of_streams_follow_the_laws_of_independent_draws():
    seeds = _streams()
    n = 200_000
    for a, b in [(seeds[0], seeds[1]), (seeds[4], seeds[5]), (seeds[7], seeds[8]),
                 (seeds[0], seeds[9])]:
        du = rng.uniform([n], a).numpy() - rng.uniform([n], b).numpy()
        # The difference of two independent U(0, 1) is triangular on (-1, 1).
        assert stats.kstest(du, stats.triang(c=0.5, loc=-1.0, scale=2.0).cdf).pvalue > 1e-3
        dz = rng.normal([n], a).numpy() - rng.normal([n], b).numpy()
        assert stats.kstest(dz, stats.norm(scale=np.sqrt(2.0)).cdf).pvalue > 1e-3


def test_fold_in_gives_distinct_keys():
    base = tf.constant([8, 9])
    data = tf.range(20_000, dtype=tf.int64)
    keys = tf.vectorized_map(lambda d: rng.fold_in(base, d), data).numpy()
    packed = keys[:, 0].astype(np.uint64) << np.uint64(32) | keys[:, 1].astype(np.uint64)
    assert len(np.unique(packed)) == len(packed)
    assert len(np.unique(keys[:, 0])) > 19_990  # ~0.05 collisions expected in 32 bits.
    np.testing.assert_array_equal(keys[123], np_fold_in(base.numpy(), np.int64(123)))
