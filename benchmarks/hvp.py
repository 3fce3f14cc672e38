"""Cost of Hessian-vector products and trace estimates relative to a gradient.

Measures, in one run on an MLP, a small CNN, a transformer encoder block and
an LSTM text model (batch 128): one gradient evaluation, one HVP
forward-over-backward, one HVP by double backward (the method PyHessian
uses), and a K-probe Hutchinson estimate with the method `"auto"` picked (all
probes in one compiled call), each as a median over interleaved repeats, and
prints their ratios to the gradient. It also reports which method `"auto"`
picked, which methods fail on the model (forward-over-backward cannot pass
the LSTM's loop), and how many times the Hutchinson function was traced.

Aim: an HVP costs at most 3 gradient evaluations.

Usage:
    python -m benchmarks.hvp [--models mlp cnn transformer lstm] [--repeats 7] [--num-probes 16]
"""

import argparse
import time

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import common
from keras_flat import hessian  # noqa: E402
from keras_flat.app.cli_arguments import add_renamed_flag  # noqa: E402
from keras_flat.utils import vector  # noqa: E402


def _timed(fn, *args):
    def run():
        start = time.perf_counter()
        out = fn(*args)
        for t in tf.nest.flatten(out):
            if hasattr(t, "numpy"):
                t.numpy()
        return time.perf_counter() - start
    return run


def run(kinds, repeats, probes, jit=False):
    rows = []
    for kind in kinds:
        model = common.MODELS[kind]()
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x, y = common.data(kind, 1)
        auto = hessian.HessianOperator(model, (x, y), jit_compile=jit)
        picked = auto.choose_method()
        tangents = vector.rademacher_like(auto.variables, tf.constant([0, 1], tf.int64))
        runners = {"gradient": _timed(auto.loss_and_gradient)}
        failed = []
        for method in hessian.HVP_METHODS:
            op = hessian.HessianOperator(model, (x, y), hvp_method=method, jit_compile=jit)
            try:
                op.matvec(tangents)  # Trace.
            except ValueError:
                failed.append(method)
                continue
            runners[f"hvp {method.replace('_', '-')}"] = _timed(op.matvec, tangents)
        runners[f"hutchinson, {probes} probes"] = _timed(
            lambda auto=auto: hessian.hessian_trace(auto, num_probes=probes).samples)
        runners["gradient"]()  # Traced before counting the Hutchinson function's traces.
        before = auto.tracing_count()
        for r in runners.values():  # Trace everything first.
            r()
        medians = common.interleaved_medians(runners, repeats)
        base = medians["gradient"]
        traces = auto.tracing_count() - before
        for name, t in medians.items():
            per = t / probes if name.startswith("hutchinson") else t
            rows.append({"model": kind, "measurement": name, "ms": 1000 * t,
                         "ratio to gradient": t / base,
                         "per HVP / gradient": per / base})
        note = f"auto picked: {picked}"
        if failed:
            note += f" ({', '.join(failed)} fails on this model)"
        rows.append({"model": kind, "measurement": f"{note}; hutchinson traced {traces} "
                     f"time(s) over {repeats + 1} calls"})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn", "transformer", "lstm"],
                        choices=sorted(common.MODELS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--num-probes", dest="probes", type=int, default=16)
    add_renamed_flag(parser, "--probes", "--num-probes")
    parser.add_argument("--jit", action="store_true")
    args = parser.parse_args(argv)
    print(f"Machine: {common.machine()}")
    rows = run(args.models, args.repeats, args.probes, args.jit)
    common.print_table(f"Hessian-vector products, batch 128, jit_compile={args.jit} "
                       f"(median of {args.repeats})", rows,
                       ["model", "measurement", "ms", "ratio to gradient", "per HVP / gradient"])
    return rows


if __name__ == "__main__":
    main()
