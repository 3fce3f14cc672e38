"""First against second one-line measurement on the same model.

For each of `hessian.hessian_trace`, `top_eigenvalues`, `spectral_density`,
`hvp` and `landscape.surface_1d`, on a fresh MLP (20-256-256-10, 73.7k
parameters, or `--width` units per hidden layer; one batch of 128), times
the first one-line call (which traces the compiled functions and, for
`method="auto"`, times both HVP methods), a second call on new data of the
same shape (which reuses them) and the same call on a `HessianOperator` (or
`Evaluator`) built beforehand, as medians over `--repeats` fresh models,
and prints the ratio of the first to the second call and how many times
the model's Hessian functions were traced after all three.

Aims: the second call at least 10x faster than the first, and as fast as
the call on a built operator. (The budgets of products are small, so that
tracing is what the first call spends; with more products Lanczos, in
`top_eigenvalues` and `spectral_density`, spends most of any call in NumPy,
which no cache removes.)

Usage:
    python -m benchmarks.repeated_calls [--repeats 3] [--width 256]
"""

import argparse
import statistics
import time

import keras
import numpy as np

from benchmarks import common
from keras_flat import hessian
from keras_flat import landscape


def _calls(dimension):
    direction = np.random.default_rng(0).normal(size=(1, dimension)) * 1e-2
    return {
        "hessian_trace (16 probes)": lambda m, d: hessian.hessian_trace(m, d, num_probes=16),
        "top_eigenvalues (4 products)": lambda m, d: hessian.top_eigenvalues(
            m, d, max_iterations=4),
        "spectral_density (4 products)": lambda m, d: hessian.spectral_density(
            m, d, num_probes=1, num_steps=4),
        "hvp": lambda m, d: hessian.hvp(m, d, np.ones(dimension, "float32")).numpy(),
        "surface_1d (21 points)": lambda m, d: landscape.surface_1d(
            m, d, direction, resolution=21).loss,
    }


def _model(width):
    model = common.mlp(width=width)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _timed(call, model, data):
    start = time.perf_counter()
    call(model, data)
    return time.perf_counter() - start


def run(repeats, width=256):
    rows = []
    warm = _model(width)
    calls = _calls(sum(int(np.prod(v.shape)) for v in warm.trainable_variables))
    for call in calls.values():  # TensorFlow's own first-use costs, on another model.
        call(warm, common.data("mlp", 1))
    for name, call in calls.items():
        times = {"first": [], "second": [], "built": []}
        traces = []
        for r in range(repeats):
            model = _model(width)
            times["first"].append(_timed(call, model, common.data("mlp", 1, seed=3 * r)))
            times["second"].append(_timed(call, model, common.data("mlp", 1, seed=3 * r + 1)))
            data = common.data("mlp", 1, seed=3 * r + 2)
            built = (landscape.Evaluator(model, data) if name.startswith("surface")
                     else hessian.HessianOperator(model, data))
            times["built"].append(_timed(call, built, None))
            traces.append(hessian.HessianOperator(model, data).tracing_count())
        first, second, built = (statistics.median(times[k]) for k in times)
        rows.append({"call": name, "first (s)": first, "second (s)": second,
                     "built operator (s)": built, "first / second": first / second,
                     "Hessian traces": max(traces)})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args(argv)
    print(f"Machine: {common.machine()}")
    rows = run(args.repeats, args.width)
    size = _model(args.width).count_params()
    common.print_table(f"One-line calls on the same model, MLP of {size} parameters, batch 128 "
                       f"(median of {args.repeats} fresh models)", rows,
                       ["call", "first (s)", "second (s)", "built operator (s)",
                        "first / second", "Hessian traces"])
    return rows


if __name__ == "__main__":
    main()
