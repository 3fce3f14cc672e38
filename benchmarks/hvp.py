"""Cost of Hessian-vector products relative to a gradient, as the measurements spend them.

On a small CNN with BatchNorm (32x32x3), a transformer encoder block and a
wide MLP (784-512-512-10, 670k parameters), batch 128, it times in one run,
interleaved (medians over `--repeats` rounds):

- one gradient evaluation (`HessianOperator.loss_and_gradient`), the unit;
- one Hutchinson probe with the operator reused:
  `hessian_trace(op, num_probes=N)` / N;
- one probe via the one-line call on a fresh model, tracing and the
  `hvp_method="auto"` timing included: `hessian_trace(model, data,
  num_probes=N)` / N, the model built (outside the timer) anew every round
  so nothing is cached;
- one power iteration and one Lanczos iteration: `top_eigenvalues(op,
  estimator=..., max_iterations=M, rtol=0)` / M (rtol=0: all M products
  run; Lanczos reorthogonalises against its whole basis, so its iteration
  is the mean over M steps);

and prints each as a ratio to the gradient, with the method `"auto"` picked
(and its timings, seconds per product).

Aims (issue 23): at most 2.1 gradients per probe or iteration on the CNN and
the transformer, 2.5 on the wide MLP; the one-line call within 10% of the
reused operator per probe.

Usage:
    python -m benchmarks.hvp [--models cnn transformer mlp-wide] [--repeats 5]
        [--num-probes 100] [--iterations 20]
"""

import argparse
import time

import keras  # noqa: E402

from benchmarks import common
from keras_flat import hessian  # noqa: E402
from keras_flat.app.cli_arguments import add_renamed_flag  # noqa: E402

COLUMNS = ["model", "measurement", "ms", "ratio to gradient"]


def _compiled(kind):
    model = common.MODELS[kind]()
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


_timed = common.timed


def _one_line(kind, data, probes):
    """A runner timing the one-line call on a model built anew (untimed) every round."""
    fresh = {}

    def build():
        fresh["model"] = _compiled(kind)

    def run():
        model = fresh.pop("model")
        start = time.perf_counter()
        hessian.hessian_trace(model, data, num_probes=probes)
        elapsed = time.perf_counter() - start
        build()
        return elapsed

    build()
    return run


def run(kinds, repeats, probes, iterations, jit=False):
    rows = []
    for kind in kinds:
        model = _compiled(kind)
        data = common.data(kind, 1)
        op = hessian.HessianOperator(model, data, jit_compile=jit)
        picked = op.choose_method()

        def eigen(estimator, op=op):
            return hessian.top_eigenvalues(op, estimator=estimator, max_iterations=iterations,
                                           rtol=0.0).values

        runners = {
            "gradient": _timed(op.loss_and_gradient),
            "probe, operator reused": _timed(
                lambda op=op: hessian.hessian_trace(op, num_probes=probes).samples),
            "probe, one-line call": _one_line(kind, data, probes),
            "power iteration": _timed(lambda: eigen("power")),
            "lanczos iteration": _timed(lambda: eigen("lanczos")),
        }
        for name, r in runners.items():  # Trace everything (the one-line call is always cold).
            if name != "probe, one-line call":
                r()
        medians = common.interleaved_medians(runners, repeats)
        base = medians["gradient"]
        per = {"gradient": 1, "probe, operator reused": probes, "probe, one-line call": probes,
               "power iteration": iterations, "lanczos iteration": iterations}
        for name, t in medians.items():
            rows.append({"model": kind, "measurement": name, "ms": 1000 * t / per[name],
                         "ratio to gradient": t / per[name] / base})
        timings = ", ".join(f"{m} {1000 * s:.1f} ms" for m, s in (op.timings or {}).items())
        note = f"auto picked {picked} ({timings} per product)"
        if op.failures:
            note += f"; {', '.join(op.failures)} fails on this model"
        rows.append({"model": kind, "measurement": note})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "transformer", "mlp-wide"],
                        choices=sorted(common.MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-probes", dest="probes", type=int, default=100)
    add_renamed_flag(parser, "--probes", "--num-probes")
    parser.add_argument("--iterations", type=int, default=20,
                        help="Products per power or Lanczos run.")
    parser.add_argument("--jit", action="store_true")
    args = parser.parse_args(argv)
    print(f"Machine: {common.machine()}")
    rows = run(args.models, args.repeats, args.probes, args.iterations, args.jit)
    common.print_table(
        f"Hessian-vector products per probe or iteration, batch 128, {args.probes} probes, "
        f"{args.iterations} iterations, jit_compile={args.jit} (median of {args.repeats})",
        rows, COLUMNS)
    return rows


if __name__ == "__main__":
    main()
