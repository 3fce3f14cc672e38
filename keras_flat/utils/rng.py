"""A counter-based random generator that gives the same numbers with and without XLA.

TensorFlow's stateless random ops are not guaranteed to produce the same
numbers with and without XLA (on TF 2.21 they do not, even with
`alg="philox"`), which would make a `jit_compile=True` run of a random
algorithm differ from the same run without XLA. The generator here is pure
uint32 integer arithmetic: a counter hashed by rounds of the MurmurHash3
finaliser, a bijective mixer.

What is identical, and what is not (tested in tests/test_rng.py on CPU;
`python -m benchmarks.rng_agreement` prints the measurement):

- `bits`, `fold_in`, and `uniform` and `rademacher` (built from the bits by
  shifts and exact float32 scaling) are bit-identical eagerly, in a
  `tf.function` and under XLA, and equal to an independent NumPy
  implementation of the same arithmetic. Nothing in them depends on the
  device, but only CPUs have been tested.
- `normal` (Box-Muller from those uniforms) uses float32 `log`, `sqrt`,
  `cos` and `sin`, which XLA implements differently: with and without XLA
  23% of the normals differ, by at most 4 float32 ulp (7.2e-7) over 5 million
  values, and both stay within 1.8e-6 of the float64 Box-Muller transform of
  the same uniforms. The tests allow 1e-6 and 4e-6.

A seed is any integer tensor of shape `(2,)`, e.g. the output of
`keras.random.SeedGenerator.next()`. No function keeps state.
"""

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
    """Uniform random uint32 values of `shape` (a counter hashed with the key).

    Args:
        shape: The output shape, a list or 1-D integer tensor.
        seed: Integer tensor of shape `(2,)`.

    Returns:
        A uint32 tensor; bit-identical with and without XLA.
    """
    size = tf.reduce_prod(tf.cast(shape, tf.int32))
    static = tf.get_static_value(size)
    if static is None:
        counter = tf.cast(tf.range(size), tf.uint32)
    else:
        counter = counters(0, int(static), seed)
    return tf.reshape(_hash(counter, seed), shape)


_WIDTH = 1024


def counters(start, length, seed):
    """The uint32 counters `start, ..., start + length - 1`, computed at run time.

    A `tf.range` with constant bounds would be folded by the graph optimizer
    into a constant that lives as long as the function (and, for a draw over
    a model's weights, is as large as the model). These counters are built
    from a zero the optimizer cannot prove to be zero, in a static shape
    that XLA compiles.

    Args:
        start: A Python int >= 0.
        length: A Python int >= 0.
        seed: The draw's seed (the zero is computed from it).

    Returns:
        A uint32 tensor of shape `(length,)`.
    """
    if length == 0:
        return tf.zeros([0], tf.uint32)
    zero = tf.cast(tf.math.is_inf(tf.cast(key(seed)[0], tf.float32)), tf.uint32)
    width = min(_WIDTH, length)
    rows = -(-length // width)
    first = tf.cast(tf.range(rows), tf.uint32) * _u32(width) + (zero + _u32(start))
    grid = first[:, None] + tf.cast(tf.range(width), tf.uint32)[None, :]
    flat = tf.reshape(grid, [-1])
    return flat if rows * width == length else flat[:length]


def _hash(counter, seed):
    """The bits at uint32 `counter` values."""
    k = key(seed)
    h = _mix(counter * _u32(_GOLDEN) + k[0])
    h = _mix(tf.bitwise.bitwise_xor(h, k[1]))
    return _mix(h + tf.bitwise.bitwise_xor(k[0], _u32(_FOLD)))


def uniform(shape, seed, dtype=tf.float32):
    """Uniform samples in [0, 1): `k * 2**-24` for the top 24 bits `k` of `bits`.

    Computed exactly in float32, then cast to `dtype`; bit-identical with and
    without XLA.
    """
    top = tf.bitwise.right_shift(bits(shape, seed), _u32(8))
    return tf.cast(tf.cast(top, tf.float32) * (2.0**-24), dtype)


def normal(shape, seed, dtype=tf.float32):
    """Standard normal samples: the Box-Muller transform of 24-bit uniforms from `bits`.

    Computed in float32 (then cast to `dtype`, so float64 samples carry float32
    precision). Not bit-identical under XLA, whose float32 `log`, `cos` and
    `sin` differ from TensorFlow's kernels by a few ulp; see the module
    docstring for the measured agreement.
    """
    shape = tf.cast(shape, tf.int32)
    size = tf.reduce_prod(shape)
    pairs = (size + 1) // 2
    raw = tf.bitwise.right_shift(bits(tf.reshape(2 * pairs, [1]), seed), _u32(8))
    raw = tf.cast(raw, tf.float32) * (2.0**-24)
    radius = tf.sqrt(-2.0 * tf.math.log(raw[:pairs] + 2.0**-24))  # In (0, 1].
    angle = _TWO_PI * raw[pairs:]
    values = tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], 0)
    return tf.cast(tf.reshape(values[:size], shape), dtype)


# Vectorised CPU kernels evaluate log, cos and sin on whole SIMD packets and
# the last (length mod packet width) entries of an array with scalar code,
# and the two may differ in the last bit. `normal_pieces` evaluates them on
# arrays that start at multiples of _ALIGN (a multiple of every packet width)
# and evaluates the flat draw's scalar tail on its own, so each entry takes
# the same code path as in `normal`. _CHUNK (a multiple of _ALIGN) bounds the
# temporaries of one evaluation.
_ALIGN = 16
_CHUNK = 1 << 20


def normal_pieces(sizes, seed, dtype=tf.float32):
    """Consecutive pieces of one standard normal draw, without the whole draw.

    Piece `i` equals entries `[sum(sizes[:i]), sum(sizes[:i+1]))` of
    `normal([sum(sizes)], seed)` bit for bit. Entry `j` of that draw comes
    from the uniforms at counters `k` and `k + pairs`, `pairs = ceil(d / 2)`,
    with `k = j` in the first half (its cosine) and `k = j - pairs` in the
    second (its sine). Consecutive pieces are grouped into runs of at most
    `_CHUNK` entries (a larger piece is a run of its own); each run is
    computed from its own counters, chunk after chunk (each chunk starts when
    the previous one is done), and split into its pieces. So the memory
    beyond the pieces themselves is one chunk's temporaries and the run
    being assembled, and the graph holds a few operations per run, not per
    piece: a model's hundreds of small tensors trace as one draw.

    Args:
        sizes: Python ints, the lengths of the pieces.
        seed: An integer tensor of shape `(2,)`.
        dtype: The pieces' dtype.

    Returns:
        A list of 1-D tensors of lengths `sizes`.
    """
    sizes = [int(n) for n in sizes]
    pairs = (sum(sizes) + 1) // 2
    chunks = _Chunks(seed, pairs)
    out, start = [], 0
    for run in _runs(sizes):
        length = sum(run)
        parts = []
        if start < pairs:  # The cosine half.
            parts += chunks.half(start, min(start + length, pairs), tf.cos)
        if start + length > pairs:  # The sine half.
            parts += chunks.half(max(start, pairs) - pairs, start + length - pairs, tf.sin)
        if not parts:
            values = tf.zeros([0], tf.float32)
        else:
            values = parts[0] if len(parts) == 1 else tf.concat(parts, 0)
        pieces = tf.split(values, run) if len(run) > 1 else [values]
        out += [tf.cast(piece, dtype) for piece in pieces]
        start += length
    return out


def _runs(sizes):
    """`sizes` cut into consecutive runs of total at most `_CHUNK` (or one piece)."""
    runs, current = [], []
    for n in sizes:
        if current and sum(current) + n > _CHUNK:
            runs.append(current)
            current = []
        current.append(n)
    if current:
        runs.append(current)
    return runs


class _Chunks:
    """Box-Muller values `radius(k) * f(angle(k))` of the draw with `pairs` pairs,
    evaluated one aligned chunk at a time."""

    def __init__(self, seed, pairs):
        self.seed = seed
        self.pairs = pairs
        self.bulk = pairs - pairs % _ALIGN  # Below: vectorised in `normal`.
        self.previous = None

    def half(self, lo, hi, f):
        """Values for counters `[lo, hi)` of one half, as pieces to concatenate."""
        parts = []
        end = min(hi, self.bulk)
        first = lo - lo % _ALIGN
        while first < end:
            last = min(first + _CHUNK, end + (-end) % _ALIGN)
            values = self._values(first, last, f)
            parts.append(values[max(lo, first) - first: min(end, last) - first])
            first = last
        if hi > self.bulk:  # The scalar tail of `normal`, evaluated alone as there.
            values = self._values(self.bulk, self.pairs, f)
            parts.append(values[max(lo, self.bulk) - self.bulk: hi - self.bulk])
        return parts

    def _values(self, lo, hi, f):
        # In order: without it, a graph runs every chunk's first op at once and
        # all their temporaries are alive together.
        with tf.control_dependencies([] if self.previous is None else [self.previous]):
            k = counters(lo, hi - lo, self.seed)
        radius = tf.sqrt(-2.0 * tf.math.log(self._uniform(k) + 2.0**-24))
        values = radius * f(_TWO_PI * self._uniform(k + _u32(self.pairs)))
        self.previous = values
        return values

    def _uniform(self, counter):
        top = tf.bitwise.right_shift(_hash(counter, self.seed), _u32(8))
        return tf.cast(top, tf.float32) * (2.0**-24)


def rademacher(shape, seed, dtype=tf.float32):
    """Independent ±1 samples, each with probability one half (the top bit of `bits`).

    Bit-identical with and without XLA.
    """
    top = tf.bitwise.right_shift(bits(shape, seed), _u32(31))
    return tf.cast(2 * tf.cast(top, tf.int32) - 1, dtype)
