"""V1 of the validation problems: escaping along the minima of f(a, b) = (ab - 1)^2.

The minima form the curve ab = 1; the Hessian trace there is 2(a² + b²), least
(= 4) at a = b = 1. Plain gradient descent conserves the imbalance
B = a² - b², so from a sharp minimum it never moves. This script starts at the
sharp minimum (a, b) = (3, 1/3) and runs plain GD, RS (Algorithm 1), SA
(Algorithm 2) and SAM as `FlatMinimaModel`s on a two-weight Keras model
(two bias-free Dense(1) layers on a constant input, MSE loss), one example per
step, then:

- plots the trajectories on the contour plot of the loss with the minima curve;
- plots the trace against the step, with the predicted exponential decay of
  the imbalance drawn over the measured one: for this loss and learning rate η,
  RS gives E[B_t] = (1 - 2ηρ²)^t B_0 and SA gives (1 - 4ηρ²)^t B_0 (derived in
  docs/algorithms.md, V1);
- prints a table of measured and predicted decay rates and final traces.

SAM does not move either: at an exact minimum its ascent direction g/‖g‖ is
undefined (g = 0) and its step is zero, while SA's jitter (the paper's
Remark 2) and RS's random directions still find the way along the minima.

Usage:
    python examples/two_dim_manifold.py [--steps 1500] [--seeds 4] [--quick] [--output-dir DIR]
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

EXAMPLE = "two_dim_manifold"
METHODS = ("gd", "rs", "sa", "sam")
LABELS = {"gd": "plain GD",  # Full-batch gradient descent; the others are the registry's.
          **{m: keras_flat.algorithms.registry.entry(m).label for m in ("rs", "sa", "sam")}}


def v1_model(a, b):
    return keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant(a)),
        keras.layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant(b)),
    ])


def algorithm(method, rho):
    return {"gd": lambda: None,
            "rs": lambda: keras_flat.algorithms.RandomSmoothing(rho=rho),
            "sa": lambda: keras_flat.algorithms.SharpnessAware(rho=rho),
            "sam": lambda: keras_flat.algorithms.SAM(rho=rho)}[method]()


class Recorder(keras.callbacks.Callback):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.path = inner, []

    def on_train_batch_end(self, batch, logs=None):
        self.path.append([float(layer.kernel.numpy()[0, 0]) for layer in self.inner.layers])


def trajectory(method, a0, b0, steps, lr, rho, seed):
    inner = v1_model(a0, b0)
    model = keras_flat.FlatMinimaModel(inner, algorithm(method, rho), seed=seed)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    recorder = Recorder(inner)
    ones = np.ones((steps, 1), "float32")
    model.fit(ones, ones, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[recorder])
    return np.array([[a0, b0]] + recorder.path)


def run(args):
    a0, b0 = args.start, 1.0 / args.start
    imbalance0 = a0 * a0 - b0 * b0
    predicted_rate = {"gd": 0.0, "rs": 2 * args.lr * args.rho**2, "sa": 4 * args.lr * args.rho**2}
    paths, rows, records = {}, [], []
    for method in METHODS:
        runs = [trajectory(method, a0, b0, args.steps, args.lr, args.rho, seed)
                for seed in range(args.seeds if method in ("rs", "sa") else 1)]
        paths[method] = runs
        imbalance = np.array([p[:, 0] ** 2 - p[:, 1] ** 2 for p in runs])
        # Mean log-decay per step over the part of the run above the noise floor.
        window = max(10, args.steps // 3)
        rate = -float(np.mean(np.log(np.abs(imbalance[:, window]) / imbalance0)) / window)
        final = np.mean([2 * (p[-1, 0] ** 2 + p[-1, 1] ** 2) for p in runs])
        row = {"method": LABELS[method], "measured rate": rate,
               "predicted rate": predicted_rate.get(method, float("nan")),
               "start trace": 2 * (a0**2 + b0**2), "final trace": float(final),
               "final loss": float(np.mean([(p[-1, 0] * p[-1, 1] - 1) ** 2 for p in runs]))}
        rows.append(row)
        every = max(1, args.steps // 100)
        for seed, path in enumerate(paths[method]):
            records.append({
                "experiment": "v1", "method": LABELS[method], "seed": seed,
                "final": {"trace": float(2 * (path[-1, 0] ** 2 + path[-1, 1] ** 2)),
                          "loss": float((path[-1, 0] * path[-1, 1] - 1) ** 2),
                          "imbalance": float(path[-1, 0] ** 2 - path[-1, 1] ** 2)},
                "history": {"step": list(range(0, args.steps + 1, every)),
                            "a": path[::every, 0].tolist(), "b": path[::every, 1].tolist()}})
    return paths, rows, records


def plot(paths, args, filename):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    grid = np.linspace(0.05, args.start * 1.1, 300)
    a, b = np.meshgrid(grid, grid)
    left.contour(a, b, 0.5 * (a * b - 1) ** 2, levels=np.geomspace(1e-3, 10, 14), cmap="Greys",
                 linewidths=0.6)
    curve = np.linspace(1 / (args.start * 1.1), args.start * 1.1, 200)
    left.plot(curve, 1 / curve, "k--", lw=1, label="minima ab = 1")
    steps = np.arange(args.steps + 1)
    a0, b0 = args.start, 1 / args.start
    imbalance0 = a0 * a0 - b0 * b0
    for method in METHODS:
        first = paths[method][0]
        line, = left.plot(first[:, 0], first[:, 1], lw=1.2, label=LABELS[method])
        traces = np.array([2 * (p[:, 0] ** 2 + p[:, 1] ** 2) for p in paths[method]])
        right.plot(steps, traces.mean(0), color=line.get_color(),
                   label=f"{LABELS[method]} measured")
        rate = {"rs": 2, "sa": 4}.get(method)
        if rate:
            predicted = imbalance0 * (1 - rate * args.lr * args.rho**2) ** steps
            right.plot(steps, 2 * np.sqrt(predicted**2 + 4), ":", color=line.get_color(),
                       label=f"{LABELS[method]} predicted")
    left.plot([1], [1], "k*", ms=10, label="flattest (1, 1)")
    left.plot([a0], [b0], "ko", ms=5, label="start (sharp minimum)")
    left.set(xlabel="a", ylabel="b", title="Trajectories on ½(ab−1)²", xlim=(0, args.start * 1.1),
             ylim=(0, args.start * 1.1))
    left.legend(fontsize="small")
    right.axhline(4, color="k", lw=0.6, ls="--")
    right.set(xlabel="step", ylabel="tr ∇²f", title="Trace along the way (predicted: dotted)")
    right.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(filename, dpi=90)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="steps per run (default 1500)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds averaged for RS and SA (4)")
    parser.add_argument("--learning-rate", dest="lr", type=float, default=0.02,
                        help="learning rate η (0.02)")
    add_renamed_flag(parser, "--lr", "--learning-rate")
    parser.add_argument("--rho", type=float, default=0.3, help="radius ρ of RS, SA, SAM (0.3)")
    parser.add_argument("--start", type=float, default=3.0,
                        help="start at the minimum (a, 1/a) with this a (3)")
    common.add_output_argument(parser, EXAMPLE)
    parser.add_argument("--quick", action="store_true", help="a short run for tests (300 steps)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seeds = 300, 2
    clock = common.Clock()
    out = common.output_dir(args.output_dir)
    paths, rows, runs = run(args)
    plot(paths, args, os.path.join(out, f"{EXAMPLE}.png"))
    table = common.markdown_table(rows, ["method", "measured rate", "predicted rate",
                                         "start trace", "final trace", "final loss"])
    common.write_results(out, EXAMPLE, vars(args), runs, {"v1": table}, {"rows": rows},
                         clock, argv)
    return rows


if __name__ == "__main__":
    main()
