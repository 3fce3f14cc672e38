"""Counter-based random draws that are the same with and without XLA.

The bits are Philox-4x32-10 (Salmon et al., SC 2011), TensorFlow's own
stateless generator (`tf.random.stateless_uniform` with `alg="philox"`): one
fused kernel, and the same bits with and without XLA. TensorFlow's stateless
*normal* op is a different algorithm under XLA (its values change
completely), so normals, uniforms and signs are computed here from the bits.
Seeds are folded by `fold_in` (rounds of the MurmurHash3 finaliser, a
bijective mixer on uint32) before they reach Philox.

What is identical, and what is not (tested in tests/test_rng.py on CPU;
`python -m benchmarks.rng_agreement` prints the measurement):

- `bits`, `fold_in`, and `uniform` and `rademacher` (built from the bits by
  shifts and exact float32 scaling) are bit-identical eagerly, in a
  `tf.function` and under XLA, and equal to an independent NumPy
  implementation of Philox and of TensorFlow's key derivation. Philox is
  the same algorithm on every device TensorFlow supports, but only CPUs have
  been tested.
- `normal` (Box-Muller from those uniforms) uses float32 `log`, `sqrt`,
  `cos` and `sin`, which XLA implements differently: with and without XLA
  about a quarter of the normals differ, by at most a few float32 ulp
  (under 1e-6), and both stay within 4e-6 of the float64 Box-Muller
  transform of the same uniforms.

A seed is any integer tensor of shape `(2,)`, e.g. the output of
`keras.random.SeedGenerator.next()`. No function keeps state.
"""

import numpy as np
import tensorflow as tf

_GOLDEN = 0x9E3779B9
_MIX1 = 0x85EBCA6B
_MIX2 = 0xC2B2AE35
_FOLD = 0x6A09E667
_TWO_PI = 6.283185307179586


def _u32(value):
    return tf.constant(value, tf.uint32)


def _mix(h):
    """MurmurHash3's 32-bit finaliser: a bijection with full avalanche."""
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, _u32(16)))
    h = h * _u32(_MIX1)
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, _u32(13)))
    h = h * _u32(_MIX2)
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, _u32(16)))


def _to_u32(value):
    """Folds an integer tensor of any dtype into uint32, keeping all 64 bits."""
    value = tf.convert_to_tensor(value)
    if value.dtype == tf.uint32:
        return value
    wide = tf.cast(value, tf.int64)
    low = tf.cast(tf.bitwise.bitwise_and(wide, 0xFFFFFFFF), tf.uint32)
    high = tf.cast(
        tf.bitwise.bitwise_and(tf.bitwise.right_shift(wide, 32), 0xFFFFFFFF),
        tf.uint32,
    )
    return tf.bitwise.bitwise_xor(low, _mix(high))


def key(seed):
    """Converts an integer seed tensor of shape `(2,)` to a uint32 key."""
    return _to_u32(seed)


def fold_in(seed, data):
    """A new seed derived from `seed` and the integer (or int tensor) `data`.

    Args:
        seed: Integer tensor of shape `(2,)`.
        data: Python int or scalar integer tensor.

    Returns:
        A uint32 tensor of shape `(2,)`.
    """
    k = key(seed)
    d = _mix(_to_u32(data) * _u32(_GOLDEN) + _u32(_FOLD))
    first = _mix(tf.bitwise.bitwise_xor(k[0], d))
    second = _mix(tf.bitwise.bitwise_xor(_mix(k[1] + d), _u32(_MIX2)))
    return tf.stack([first, second])


def bits(shape, seed):
    """Uniform random uint32 values of `shape`: Philox's stream for `seed`.

    Args:
        shape: The output shape, a list or 1-D integer tensor.
        seed: Integer tensor of shape `(2,)`.

    Returns:
        A uint32 tensor; bit-identical with and without XLA.
    """
    return tf.random.stateless_uniform(shape, tf.cast(key(seed), tf.int64), minval=None,
                                       maxval=None, dtype=tf.uint32, alg="philox")


def uniform(shape, seed, dtype=tf.float32):
    """Uniform samples in [0, 1): `k * 2**-24` for the top 24 bits `k` of `bits`.

    Computed exactly in float32, then cast to `dtype`; bit-identical with and
    without XLA.
    """
    top = tf.bitwise.right_shift(bits(shape, seed), _u32(8))
    return tf.cast(tf.cast(top, tf.float32) * (2.0**-24), dtype)


# Normals are Box-Muller pairs drawn `_CHUNK` pairs at a time (a bound on
# the temporaries): chunk `c` holds the normals from `2c·_CHUNK` on, the
# cosines of its `n` pairs followed by their sines, with the radii from the
# uniforms of seed `fold_in(seed, 2c)` and the angles from those of
# `fold_in(seed, 2c + 1)`. Chunks are computed the same way
# whether the whole draw is asked for (`normal`) or its pieces
# (`normal_pieces`): vectorised CPU kernels evaluate log, cos and sin on SIMD
# packets and the last (length mod packet width) entries of an array with
# scalar code, so the same values need the same arrays.
_CHUNK = 1 << 19


def _pairs(length, radius_seed, angle_seed):
    """The normals of `length` pairs: their cosines, then their sines."""
    radius = tf.sqrt(-2.0 * tf.math.log(uniform([length], radius_seed) + 2.0**-24))
    angle = _TWO_PI * uniform([length], angle_seed)
    return tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], 0)


def normal(shape, seed, dtype=tf.float32):
    """Standard normal samples: the Box-Muller transform of 24-bit uniforms.

    Computed in float32 (then cast to `dtype`, so float64 samples carry float32
    precision). Not bit-identical under XLA, whose float32 `log`, `cos` and
    `sin` differ from TensorFlow's kernels by a few ulp; see the module
    docstring for the measured agreement.
    """
    size = tf.get_static_value(tf.reduce_prod(tf.cast(shape, tf.int32)))
    if size is not None:
        return tf.reshape(normal_pieces([int(size)], seed, dtype)[0], shape)
    size = tf.reduce_prod(tf.cast(shape, tf.int32))  # Known when run: one chunk.
    pairs = (size + 1) // 2
    values = _pairs(pairs, fold_in(seed, 0), fold_in(seed, 1))[:size]  # Odd: no last sine.
    return tf.cast(tf.reshape(values, shape), dtype)


def normal_pieces(sizes, seed, dtype=tf.float32):
    """Consecutive pieces of one standard normal draw, without the whole draw.

    Piece `i` equals entries `[sum(sizes[:i]), sum(sizes[:i+1]))` of
    `normal([sum(sizes)], seed)` bit for bit. The draw is computed one chunk
    of at most 2**20 values after another (each chunk starts when the
    previous one is done) and each chunk is split into the pieces it
    serves, so the memory beyond the pieces is one chunk's temporaries and
    the piece being assembled, and the graph holds a few operations per
    chunk, not per piece: a model's hundreds of small tensors trace as one
    draw.

    Args:
        sizes: Python ints, the lengths of the pieces.
        seed: An integer tensor of shape `(2,)`.
        dtype: The pieces' dtype.

    Returns:
        A list of 1-D tensors of lengths `sizes`.
    """
    sizes = [int(n) for n in sizes]
    pairs = (sum(sizes) + 1) // 2
    out, pending, piece, need = [], [], 0, sizes[0] if sizes else 0
    previous = []
    # Every chunk's two seeds in one derivation (fold_in works element-wise):
    # a graph of a few operations per chunk, not a few hundred.
    seeds = fold_in(seed, tf.range(2 * (-(-pairs // _CHUNK)), dtype=tf.int32))
    for lo in range(0, pairs, _CHUNK):
        hi = min(lo + _CHUNK, pairs)
        with tf.control_dependencies(previous):  # In order, not all at once.
            chunk = lo // _CHUNK
            values = _pairs(hi - lo, seeds[:, 2 * chunk], seeds[:, 2 * chunk + 1])
        previous = [values]
        lengths, owners, left = [], [], 2 * (hi - lo)
        while left and piece < len(sizes):
            take = min(need, left)
            lengths.append(take)
            owners.append(piece)
            left -= take
            need -= take
            if need == 0:
                piece += 1
                need = sizes[piece] if piece < len(sizes) else 0
        lengths.append(left)  # An odd draw's unused last sine, if any.
        segments = tf.split(values, lengths) if len(lengths) > 1 else [values]
        for owner, segment in zip(owners, segments):
            pending.append(segment)
            if sum(int(p.shape[0]) for p in pending) == sizes[owner]:
                out.append(pending[0] if len(pending) == 1 else tf.concat(pending, 0))
                pending = []
    while len(out) < len(sizes):  # Pieces of length zero.
        out.append(tf.zeros([0], tf.float32))
    return [tf.cast(p, dtype) for p in out]


def rademacher(shape, seed, dtype=tf.float32):
    """Independent ±1 samples, each with probability one half.

    Sample `i` is bit `i % 32` of value `i // 32` of `bits`,
    +1 where the bit is set: 32 signs per random value, read eight at a time
    from a 256-row table. Bit-identical with and without XLA.
    """
    shape = tf.cast(shape, tf.int32)
    size = tf.reduce_prod(shape)
    words = bits(tf.reshape((size + 31) // 32, [1]), seed)
    octets = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(words[:, None], tf.constant([0, 8, 16, 24], tf.uint32)[None, :]),
        _u32(255))
    signs = tf.gather(_sign_table(dtype), tf.cast(octets, tf.int32))  # (words, 4, 8)
    return tf.reshape(tf.reshape(signs, [-1])[:size], shape)


def _sign_table(dtype):
    """Row `b` holds ±1 for the bits of the octet `b`, least significant first."""
    bit_set = (np.arange(256)[:, None] >> np.arange(8)[None, :]) % 2
    return tf.constant(2 * bit_set - 1, dtype)
