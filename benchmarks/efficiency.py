"""Flatness gained per unit of cost: every rule from the same sharp minimum.

Starts every configuration from the sharp, badly generalising interpolating
minimum of `examples/escape_sharp_minimum.py` (Liu et al.'s poisoning
recipe, a small CNN on scikit-learn's 8x8 digits, squared loss) and
continues on the clean training set with SGD at a small constant learning
rate, giving each the same budget of gradient evaluations (counted in
batch gradients: SA's single-example gradients count as `examples /
batch size` of one). It reports, over several seeds, the Hessian trace
(Hutchinson, the same probes for every run) at the start and the end, the
share of every-step SA's trace decrease each configuration achieves, the
test accuracy, and the cost: the nominal gradient evaluations per step and
the measured time per step relative to plain training (a `train_on_batch`
loop on the same model, variants interleaved).

The figure of merit: a configuration that reaches at least 80% of
every-step SA's trace decrease at no more than 1.3x plain training's
measured cost per step.

Usage:
    python -m benchmarks.efficiency [--seeds 0 1 2] [--budget 30] [--quick]
"""

import argparse
import importlib.util
import os
import time

import keras  # noqa: E402  (after common sets the log level)
import numpy as np  # noqa: E402

import keras_flat  # noqa: E402
from benchmarks import common
from keras_flat import algorithms
from keras_flat import hessian
from keras_flat.app import datasets
from keras_flat.app.cli_arguments import add_renamed_flag

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BATCH = 32

CONFIGS = {
    "plain SGD": lambda: None,
    "SA (Alg. 2)": lambda: algorithms.SharpnessAware(rho=0.05),
    "SA, interval=2": lambda: algorithms.SharpnessAware(rho=0.05, interval=2),
    "SA, interval=4": lambda: algorithms.SharpnessAware(rho=0.05, interval=4),
    "SA, start=0.5": lambda: algorithms.SharpnessAware(rho=0.05, start=0.5),
    "SA, center, antithetic": lambda: algorithms.SharpnessAware(
        rho=0.05, center=True, antithetic=True),
    "RS (Alg. 1)": lambda: algorithms.RandomSmoothing(rho=4.0),
    "RS, rho=0.05": lambda: algorithms.RandomSmoothing(rho=0.05),
    "RS, interval=4": lambda: algorithms.RandomSmoothing(rho=4.0, interval=4),
    "SAM": lambda: algorithms.SAM(rho=0.05),
    "SAM, interval=4": lambda: algorithms.SAM(rho=0.05, interval=4),
    "LookSAM, interval=5": lambda: algorithms.LookSAM(rho=0.05, interval=5),
    "GSAM": lambda: algorithms.GSAM(rho=0.05, gap_weight=0.1),
    "AE-SAM": lambda: algorithms.AESAM(rho=0.05),
    "RWP": lambda: algorithms.RWP(sigma=0.01),
    "ARWP": lambda: algorithms.ARWP(sigma=0.01),
}
QUICK = ("plain SGD", "SA (Alg. 2)", "SA, interval=4", "SAM, interval=4", "LookSAM, interval=5")


def cost(algorithm, perturbed_fraction=None, batch=BATCH):
    """Batch-gradient evaluations per step, from the rule's own pieces.

    Args:
        algorithm: An algorithm, or None for plain Keras.
        perturbed_fraction: The measured fraction of perturbed steps; None
            uses the schedule's expectation (AE-SAM's trigger: a guess of 1/2).
    """
    if algorithm is None or not algorithm.perturbs:
        return 1.0
    return algorithm.gradient_evaluations(batch, perturbed_fraction)


def load_escape():
    path = os.path.join(ROOT, "examples", "escape_sharp_minimum.py")
    spec = importlib.util.spec_from_file_location("escape_sharp_minimum", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sharp_start(escape, data, y_train, cache):
    """The poisoned minimum's weights (built once, cached)."""
    if os.path.exists(cache):
        with np.load(cache) as f:
            return [f[f"w{i}"] for i in range(len(f.files))]
    # The escape example's defaults.
    args = argparse.Namespace(seed=0, sharpening_epochs=400, aux_copies=4, aux_noise=0.05,
                              max_clean_epochs=100)
    weights, _ = escape.sharp_minimum(data, y_train, args, print)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    np.savez(cache, **{f"w{i}": w for i, w in enumerate(weights)})
    return weights


def trace_of(model, probe, seed=0):
    return hessian.hessian_trace(model, probe, num_probes=32, seed=seed).value


def run(escape, name, weights, data, y_train, y_test, probe, budget, seed, lr):
    algorithm = CONFIGS[name]()
    keras.utils.set_random_seed(seed)
    inner = escape.cnn()
    inner.set_weights(weights)
    model = keras_flat.FlatMinimaModel(inner, algorithm, seed=seed)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse",
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    epochs = max(1, int(round(budget / cost(algorithm))))
    history = model.fit(data.x_train, y_train, batch_size=BATCH, epochs=epochs,
                        verbose=0).history
    fraction = float(np.mean(history["perturbed"]))
    test = model.evaluate(data.x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    return {"trace": trace_of(model, probe), "test": test, "fraction": fraction,
            "epochs": epochs, "evaluations": epochs * cost(algorithm, fraction)}


def step_times(escape, names, weights, x, y, steps, repeats):
    """Seconds per `train_on_batch` step of each configuration, interleaved."""
    models = {}
    for name in names:
        inner = escape.cnn()
        inner.set_weights(weights)
        algorithm = CONFIGS[name]()
        model = keras.Sequential([inner]) if algorithm is None else (
            keras_flat.FlatMinimaModel(inner, algorithm, seed=0))
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
        model.train_on_batch(x[:BATCH], y[:BATCH])  # Trace.
        models[name] = model

    def runner(model):
        def time_it():
            start = time.perf_counter()
            for i in range(steps):
                first = (i * BATCH) % (len(x) - BATCH)
                model.train_on_batch(x[first:first + BATCH], y[first:first + BATCH])
            return (time.perf_counter() - start) / steps
        return time_it

    return common.interleaved_medians({n: runner(m) for n, m in models.items()}, repeats)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=30.0,
                        help="batch-gradient evaluations per run, in plain epochs (30)")
    parser.add_argument("--learning-rate", dest="lr", type=float, default=0.02)
    add_renamed_flag(parser, "--lr", "--learning-rate")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--timing-steps", type=int, default=60)
    parser.add_argument("--timing-repeats", type=int, default=5)
    parser.add_argument("--cache", default=os.path.join(HERE, ".cache", "sharp_minimum.npz"))
    parser.add_argument("--quick", action="store_true",
                        help="one seed, five configurations, a short budget")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.budget, args.configs = [0], 4.0, list(QUICK)
        args.timing_steps, args.timing_repeats = 20, 2
    names = ["plain SGD"] + [n for n in args.configs if n != "plain SGD"]
    if "SA (Alg. 2)" not in names:
        names.insert(1, "SA (Alg. 2)")
    escape = load_escape()
    data = datasets.load("digits", image_shape=True, seed=0)
    eye = np.eye(10, dtype="float32")
    y_train, y_test = eye[data.y_train], eye[data.y_test]
    weights = sharp_start(escape, data, y_train, args.cache)
    probe = (data.x_train[:256], y_train[:256])
    start = escape.cnn()
    start.set_weights(weights)
    start.compile(loss="mse", metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    start_trace = trace_of(start, probe)
    start_test = start.evaluate(data.x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    results = {n: [run(escape, n, weights, data, y_train, y_test, probe, args.budget, s, args.lr)
                   for s in args.seeds] for n in names}
    times = step_times(escape, names, weights, data.x_train, y_train, args.timing_steps,
                       args.timing_repeats)
    sa_drop = start_trace - np.mean([r["trace"] for r in results["SA (Alg. 2)"]])
    print(f"Machine: {common.machine()}")
    print(f"\nStart (the poisoned minimum): Hessian trace {start_trace:.1f}, test accuracy "
          f"{start_test:.4f}. Budget: {args.budget:g} plain epochs of batch gradients, "
          f"batch {BATCH}, SGD lr {args.lr:g}, seeds {args.seeds}.")
    rows = []
    for n in names:
        runs = results[n]
        traces = np.array([r["trace"] for r in runs])
        tests = np.array([r["test"] for r in runs])
        drop = start_trace - traces.mean()
        ratio = times[n] / times["plain SGD"]
        share = drop / sa_drop if sa_drop > 0 else float("nan")
        rows.append({
            "configuration": n,
            "gradients/step": f"{np.mean([r['evaluations'] / r['epochs'] for r in runs]):.2f}",
            "time/step vs plain": f"{ratio:.2f}",
            "perturbed": f"{np.mean([r['fraction'] for r in runs]):.2f}",
            "trace end": f"{traces.mean():.1f} ± {traces.std():.1f}",
            "share of SA's decrease": f"{100 * share:.0f}%",
            "test accuracy": f"{tests.mean():.4f} ± {tests.std():.4f}",
            "meets target": "yes" if share >= 0.8 and ratio <= 1.3 else "",
        })
    common.print_table("Same budget of gradient evaluations from the sharp minimum", rows,
                       list(rows[0]))


if __name__ == "__main__":
    main()
