"""The paper's d-fold claim: SA decreases the trace D times faster than RS.

Part 1, V1 in vector form: f(y, z) = (yᵀz - 1)², y, z in R^k, D = 2k
parameters, as a Keras model (Dense(k) then Dense(1), bias-free, constant
input, MSE loss). Gradient flow conserves Y = yyᵀ - zzᵀ, and to leading order
RS shrinks it by (1 - 4ηρ²/D) per step and SA by (1 - 4ηρ²), so the ratio of
their decay rates is D. The script measures both rates at several D (RS
averaged over seeds, each over the steps in which the prediction falls by a
factor e^1.5) and plots the ratio against D next to the line ratio = D.

Part 2, SA's `examples` (the paper's Figure 3, right): on V3, a diagonal
linear network p(a) = aᵀ(u ⊙ v) fitted to N = 6 examples in D = 16
dimensions from the minimum-norm interpolant, SA with the direction taken
from 1, 3 or all 6 examples of the batch. With one example the direction is
the top eigenvector of that example's rank-one Hessian and the drift is the
full trace gradient; with more examples it is curvature along one direction
of a higher-rank Hessian, and the trace falls more slowly.

Usage:
    python examples/dimension_speedup.py [--dims 2 4 8 16 32] [--quick] [--output-dir DIR]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_flat  # noqa: E402
from keras_flat.app.cli_arguments import add_renamed_flag  # noqa: E402

import common  # noqa: E402

EXAMPLE = "dimension_speedup"


def vector_v1(k, a):
    u = np.ones((k,)) / np.sqrt(k)
    return keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(k, use_bias=False,
                           kernel_initializer=keras.initializers.Constant((a * u)[None, :])),
        keras.layers.Dense(1, use_bias=False,
                           kernel_initializer=keras.initializers.Constant((u / a)[:, None])),
    ])


def imbalance(model):
    y = model.layers[0].kernel.numpy()[0]
    z = model.layers[1].kernel.numpy()[:, 0]
    return np.linalg.norm(np.outer(y, y) - np.outer(z, z))


def decay_rate(method, k, steps, lr, rho, seed, a=2.0):
    inner = vector_v1(k, a)
    start = imbalance(inner)
    algorithm = (keras_flat.algorithms.RandomSmoothing(rho=rho) if method == "rs"
                 else keras_flat.algorithms.SharpnessAware(rho=rho))
    model = keras_flat.FlatMinimaModel(inner, algorithm, seed=seed)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse", steps_per_execution=50)
    ones = np.ones((steps, 1), "float32")
    model.fit(ones, ones, batch_size=1, epochs=1, shuffle=False, verbose=0)
    return -np.log(imbalance(inner) / start) / steps


class DiagonalLinear(keras.layers.Layer):
    """p(a) = aᵀ(u ⊙ v), the diagonal linear network of V3."""

    def __init__(self, u, v, **kwargs):
        super().__init__(**kwargs)
        self.u0, self.v0 = u, v

    def build(self, input_shape):
        constant = keras.initializers.Constant
        self.u = self.add_weight(shape=self.u0.shape, initializer=constant(self.u0))
        self.v = self.add_weight(shape=self.v0.shape, initializer=constant(self.v0))

    def call(self, x):
        return keras.ops.sum(x * self.u * self.v, axis=-1, keepdims=True)


def v3_problem():
    """The instance of docs/algorithms.md (V3): N = 6, D = 16, β* on indices 1 and 5."""
    rng = np.random.default_rng(1)
    n, d = 6, 16
    a = rng.normal(size=(n, d))
    beta_star = np.zeros(d)
    beta_star[1], beta_star[5] = 1.0, -0.7
    b = a @ beta_star
    beta = np.linalg.pinv(a) @ b  # Minimum-norm interpolant.
    u = np.full(d, 3.0)
    return a.astype("float32"), b.astype("float32")[:, None], u, beta / u


def v3_trace(layer, a):
    u, v = layer.u.numpy(), layer.v.numpy()
    return 2.0 / len(a) * float(np.sum(np.sum(a**2, axis=0) * (u**2 + v**2)))


def examples_effect(examples, steps, lr, rho, seed, record_every):
    a, b, u, v = v3_problem()
    layer = DiagonalLinear(u, v)
    inner = keras.Sequential([keras.Input((a.shape[1],)), layer])
    algorithm = keras_flat.algorithms.SharpnessAware(rho=rho, examples=examples)
    model = keras_flat.FlatMinimaModel(inner, algorithm, seed=seed)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse", steps_per_execution=50)
    traces = [v3_trace(layer, a)]
    for _ in range(steps // record_every):
        model.fit(np.tile(a, (record_every, 1)), np.tile(b, (record_every, 1)),
                  batch_size=len(a), epochs=1, shuffle=False, verbose=0)
        traces.append(v3_trace(layer, a))
    return np.array(traces)


def run(args):
    rows, runs = [], []
    for k in (d // 2 for d in args.dims):
        dim = 2 * k
        base = 4 * args.lr * args.rho**2
        rates = {}
        for method, steps, seeds in (("rs", int(np.ceil(1.5 * dim / base)), args.seeds),
                                     ("sa", int(np.ceil(1.5 / base)), max(1, args.seeds // 2))):
            rates[method] = [decay_rate(method, k, steps, args.lr, args.rho, s)
                             for s in range(seeds)]
            runs += [{"experiment": f"v1, D = {dim}", "method": method.upper(), "seed": s,
                      "final": {"rate": float(r), "steps": steps}, "history": {}}
                     for s, r in enumerate(rates[method])]
        rs, sa = float(np.mean(rates["rs"])), float(np.mean(rates["sa"]))
        rows.append({"D": dim, "RS rate": rs, "RS predicted": -np.log(1 - base / dim),
                     "SA rate": sa, "SA predicted": -np.log(1 - base),
                     "SA/RS ratio": sa / rs, "predicted ratio": float(dim)})
    curves = {}
    for m in (1, 3, 6):
        per_seed = [examples_effect(m, args.v3_steps, args.v3_lr, args.v3_rho, s,
                                    args.v3_steps // 20)
                    for s in range(max(1, args.seeds // 2))]
        curves[m] = np.mean(per_seed, axis=0)
        runs += [{"experiment": "v3", "method": f"SA, examples={m}", "seed": s,
                  "final": {"trace": float(c[-1])},
                  "history": {"step": np.linspace(0, args.v3_steps, len(c)).tolist(),
                              "hessian_trace": c.tolist()}}
                 for s, c in enumerate(per_seed)]
    return rows, curves, runs


def plot(rows, curves, args, filename):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.2))
    dims = np.array([r["D"] for r in rows])
    left.plot(dims, dims, "k--", label="predicted: ratio = D")
    left.plot(dims, [r["SA/RS ratio"] for r in rows], "o-", label="measured SA / RS")
    left.set(xscale="log", yscale="log", xlabel="parameters D", ylabel="trace-decay rate ratio",
             title="V1, vector form: SA is D times faster")
    from matplotlib.ticker import NullFormatter
    left.set_xticks(dims, [str(d) for d in dims])
    left.set_yticks(dims, [str(d) for d in dims])
    left.xaxis.set_minor_formatter(NullFormatter())
    left.yaxis.set_minor_formatter(NullFormatter())
    left.legend()
    steps = np.linspace(0, args.v3_steps, len(curves[1]))
    for m, curve in curves.items():
        right.plot(steps, curve, label=f"SA, examples={m}" + (" (full batch)" if m == 6 else ""))
    a, _, _, _ = v3_problem()
    right.axhline(2.8739 * 2, color="k", lw=0.6, ls="--", label="flattest (LP)")
    right.set(xlabel="step", ylabel="tr ∇²f", yscale="log",
              title="V3: the direction from one example is best")
    right.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(filename, dpi=90)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8, 16, 32],
                        help="even numbers of parameters D (default 2 4 8 16 32)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds for RS (SA uses half)")
    parser.add_argument("--learning-rate", dest="lr", type=float, default=0.02,
                        help="learning rate η (0.02)")
    add_renamed_flag(parser, "--lr", "--learning-rate")
    parser.add_argument("--rho", type=float, default=0.3, help="radius ρ (0.3)")
    parser.add_argument("--v3-steps", type=int, default=4000, help="steps of part 2 (4000)")
    parser.add_argument("--v3-learning-rate", dest="v3_lr", type=float, default=0.01,
                        help="learning rate of part 2")
    add_renamed_flag(parser, "--v3-lr", "--v3-learning-rate")
    parser.add_argument("--v3-rho", type=float, default=0.3, help="radius of part 2")
    common.add_output_argument(parser, EXAMPLE)
    parser.add_argument("--quick", action="store_true", help="D = 2 and 8 only, short part 2")
    args = parser.parse_args(argv)
    if args.quick:
        args.dims, args.seeds, args.v3_steps = [2, 8], 4, 1000
    if any(d % 2 or d < 2 for d in args.dims):
        parser.error("--dims must be even numbers >= 2")
    clock = common.Clock()
    out = common.output_dir(args.output_dir)
    rows, curves, runs = run(args)
    plot(rows, curves, args, os.path.join(out, f"{EXAMPLE}.png"))
    finals = [{"SA examples": m, "start trace": float(c[0]), "final trace": float(c[-1])}
              for m, c in curves.items()]
    tables = {
        "v1": common.markdown_table(rows, ["D", "RS rate", "RS predicted", "SA rate",
                                           "SA predicted", "SA/RS ratio", "predicted ratio"]),
        "v3": common.markdown_table(finals, ["SA examples", "start trace", "final trace"])}
    common.write_results(out, EXAMPLE, vars(args), runs, tables,
                         {"rows": rows, "examples": finals}, clock, argv)
    return rows, finals


if __name__ == "__main__":
    main()
