"""How far `keras_flat.utils.rng` agrees with itself with and without XLA.

For each function of the generator (bits, uniform, rademacher, fold_in,
normal) and several seeds, draws the same values eagerly, in a
`tf.function` and in a `tf.function(jit_compile=True)`, and prints how many
values differ and by how much: the maximum absolute difference and the
maximum difference in float32 units in the last place (ulp, the spacing of
float32 at the larger of the two magnitudes). For the normals it also prints
the largest absolute difference to the Box-Muller transform computed in
float64 (NumPy) from the same uniforms. That the bits equal an independent
NumPy implementation is asserted by tests/test_rng.py.

Usage:
    python -m benchmarks.rng_agreement [--size 1000003] [--seeds 5] [--quick]
"""

import argparse

import numpy as np
import tensorflow as tf

from benchmarks import common
from keras_flat.utils import rng


def _draw(name, size):
    def fn(seed):
        if name == "fold_in":  # One folded seed per data value 0, 1, ..., size - 1.
            data = tf.range(size, dtype=tf.int64)
            return tf.vectorized_map(lambda d: rng.fold_in(seed, d), data)
        return getattr(rng, name)([size], seed)

    return fn


def _ulp(a, b):
    a, b = a.astype(np.float32), b.astype(np.float32)
    spacing = np.spacing(np.maximum(np.abs(a), np.abs(b)))
    return np.abs(a.astype(np.float64) - b.astype(np.float64)) / spacing


def _box_muller64(seed, size):
    """The Box-Muller transform of the generator's uniforms, in float64: chunk
    `c` holds its pairs' cosines, then their sines, with the radii from the
    uniforms of seed `fold_in(seed, 2c)` and the angles from those of
    `fold_in(seed, 2c + 1)`."""
    pairs, out = (size + 1) // 2, []
    for chunk, lo in enumerate(range(0, pairs, rng._CHUNK)):
        length = min(rng._CHUNK, pairs - lo)

        def uniforms(stream, length=length):
            raw = rng.bits([length], rng.fold_in(seed, stream)).numpy() >> np.uint32(8)
            return raw.astype(np.float64) * 2.0**-24

        radius = np.sqrt(-2.0 * np.log(uniforms(2 * chunk) + 2.0**-24))
        angle = 2.0 * np.pi * uniforms(2 * chunk + 1)
        out.append(np.concatenate([radius * np.cos(angle), radius * np.sin(angle)]))
    return np.concatenate(out)[:size] if out else np.zeros(0)


def measure(size, seeds):
    tf.get_logger().setLevel("ERROR")  # One trace per function and mode; no retracing notes.
    seeds = [tf.constant([s, 1000 + 7 * s], tf.int64) for s in range(seeds)]
    rows = []
    for name in ("bits", "uniform", "rademacher", "fold_in", "normal"):
        fn = _draw(name, size)
        graph, xla = tf.function(fn), tf.function(fn, jit_compile=True)
        differ = {"graph": 0, "xla": 0}
        max_abs, max_ulp, max_ref = 0.0, 0.0, 0.0
        for seed in seeds:
            eager = fn(seed).numpy()
            for mode, run in (("graph", graph), ("xla", xla)):
                other = run(seed).numpy()
                differ[mode] += int(np.count_nonzero(eager != other))
                if eager.dtype.kind == "f":
                    max_abs = max(max_abs, float(np.max(np.abs(eager - other))))
                    max_ulp = max(max_ulp, float(np.max(_ulp(eager, other))))
            if name == "normal":
                reference = _box_muller64(seed, size)
                for values in (eager, xla(seed).numpy()):
                    max_ref = max(max_ref, float(np.max(np.abs(values - reference))))
        count = size * len(seeds) * (2 if name == "fold_in" else 1)
        rows.append({
            "function": name, "values": count,
            "differ, graph vs eager": differ["graph"], "differ, XLA vs eager": differ["xla"],
            "max abs diff, XLA vs eager": max_abs, "max ulp, XLA vs eager": max_ulp,
            "max abs diff to float64 Box–Muller": max_ref if name == "normal" else "—",
        })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1_000_003, help="values per seed")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10,001 values, 2 seeds")
    args = parser.parse_args(argv)
    size, seeds = (10_001, 2) if args.quick else (args.size, args.seeds)
    print(common.machine())
    rows = measure(size, seeds)
    for row in rows:  # Counts with thousands separators.
        for key, value in row.items():
            if isinstance(value, int):
                row[key] = f"{value:,}"
    common.print_table(
        f"keras_flat.utils.rng with and without XLA ({seeds} seeds × {size:,} values)",
        rows, list(rows[0]))

if __name__ == "__main__":
    main()
