"""MNIST-1D: the published baselines, then the paper's question on a benchmark with a table.

MNIST-1D (Greydanus & Kobak, arXiv 2011.14439) has 4,000 training and 1,000
test sequences of length 40, generated offline by `keras_flat.app.datasets.mnist1d`
with the published arguments. Its published table: logistic regression 32%,
MLP 68%, CNN 94%, GRU 91% test accuracy.

1. Baselines. Keras copies of the authors' models (notebooks/models.py of
   github.com/greydanus/mnist1d): the CNN `ConvBase` (three Conv1D layers of
   25 channels, kernel 5, 3, 3, stride 2, padding 1, ReLU, then a linear
   layer; 5,210 parameters) and the MLP `MLPBase` (40-100-100-10 with a
   residual second layer, ReLU; 15,210 parameters), with PyTorch's default
   initialisation, trained as in the authors' notebooks/train.py: Adam,
   learning rate 0.01 (epsilon 1e-8), cross-entropy, batch 100 taken in order
   without shuffling, 6,000 steps (150 epochs). Test accuracy after the last
   step, mean ± standard deviation over the seeds.
2. Escaping a sharp minimum (the paper's experiment, here): a CNN wide enough
   to memorise (the same three Conv1D layers with 32 channels, then a dense
   layer of 128; 28,298 parameters), squared loss on one-hot labels, is
   poisoned with the recipe of escape_sharp_minimum.py: joint training (Adam)
   on the training set and `--aux-copies` copies of it shifted by up to one
   position with Gaussian noise, carrying random labels; then clean training
   (Adam) to 100% training accuracy. From that minimum every method continues
   on the clean set with plain SGD at a small constant learning rate for the
   same number of epochs: plain SGD, SAM, RS (Algorithm 1), SA (Algorithm 2,
   the paper's rule) and SA with the `center` and `antithetic` options.
   Every epoch: the Hessian trace (Hutchinson, 8 probes, the same each time)
   on the first 512 training sequences, training and test accuracy; the top
   eigenvalue (Lanczos) at the start and the end.
3. From scratch: the same CNN and loss, trained from the same initial
   weights by every method under the same budget (SGD with momentum 0.9).

Everything runs for `--seeds` (5) seeds; tables give mean ± sample standard
deviation, the plot the per-epoch mean with the range over seeds shaded.
`--quick` is a short run for the test suite.

Usage:
    python examples/mnist1d_benchmark.py [--seeds 0 1 2 3 4] [--quick] [--output-dir DIR]
    python examples/mnist1d_benchmark.py --seeds 0 1 --output-dir a & \
        python examples/mnist1d_benchmark.py --seeds 2 3 4 --output-dir b; wait
    python examples/mnist1d_benchmark.py --merge a b --output-dir c   # one set of tables
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_flat  # noqa: E402
from keras_flat.app import datasets  # noqa: E402
from keras_flat.app.cli_arguments import add_renamed_flag  # noqa: E402

import common  # noqa: E402

EXAMPLE = "mnist1d_benchmark"
PUBLISHED = {"cnn": 0.94, "mlp": 0.68}  # The published table's test accuracies.


# ----------------------------------------------------------------------------- models

def _torch_default(fan_in):
    """PyTorch's default Linear/Conv initialisation: U(±1/√fan_in) for weights and biases."""
    bound = 1.0 / np.sqrt(fan_in)
    return {"kernel_initializer": keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
            "bias_initializer": keras.initializers.RandomUniform(-bound, bound)}


def published_cnn(channels=25):
    """The authors' ConvBase: 3 × (pad 1, Conv1D stride 2, ReLU), then a linear layer."""
    layers = [keras.Input((40, 1))]
    fan_in = 1
    for kernel in (5, 3, 3):
        layers += [keras.layers.ZeroPadding1D(1),
                   keras.layers.Conv1D(channels, kernel, strides=2, activation="relu",
                                       **_torch_default(fan_in * kernel))]
        fan_in = channels
    layers += [keras.layers.Flatten(), keras.layers.Dense(10, **_torch_default(5 * channels))]
    return keras.Sequential(layers)


def published_mlp(hidden=100):
    """The authors' MLPBase: h = relu(W1 x); h = h + relu(W2 h); logits = W3 h."""
    inputs = keras.Input((40, 1))
    x = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(hidden, activation="relu", **_torch_default(40))(x)
    h = keras.layers.Add()([h, keras.layers.Dense(hidden, activation="relu",
                                                  **_torch_default(hidden))(h)])
    return keras.Model(inputs, keras.layers.Dense(10, **_torch_default(hidden))(h))


def escape_cnn(channels=32, hidden=128):
    """The CNN of parts 2 and 3: ConvBase's layers, wider, with a dense layer to memorise."""
    layers = [keras.Input((40, 1))]
    for kernel in (5, 3, 3):
        layers += [keras.layers.ZeroPadding1D(1),
                   keras.layers.Conv1D(channels, kernel, strides=2, activation="relu")]
    layers += [keras.layers.Flatten(), keras.layers.Dense(hidden, activation="relu"),
               keras.layers.Dense(10)]
    return keras.Sequential(layers)


def accuracy():
    return keras.metrics.CategoricalAccuracy(name="accuracy")


# ----------------------------------------------------------------------------- part 1

def baseline(kind, data, seed, args):
    keras.utils.set_random_seed(seed)
    model = published_cnn() if kind == "cnn" else published_mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-2, epsilon=1e-8),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=40, jit_compile=args.jit)
    epochs = max(1, round(args.baseline_steps * 100 / len(data.x_train)))
    history = model.fit(data.x_train, data.y_train, batch_size=100, epochs=epochs,
                        shuffle=False, validation_data=(data.x_test, data.y_test),
                        verbose=0).history
    return {"experiment": "baseline", "method": f"published {kind.upper()}", "seed": seed,
            "final": {"test_accuracy": history["val_accuracy"][-1],
                      "train_accuracy": history["accuracy"][-1],
                      "parameters": model.count_params(), "steps": epochs * 40},
            "history": {"test_accuracy": history["val_accuracy"],
                        "train_accuracy": history["accuracy"]}}


# ----------------------------------------------------------------------------- part 2

def poisoned_set(x_train, copies, noise, rng):
    """Copies of the sequences shifted by up to one position, plus noise, with random labels."""
    sequences = []
    for _ in range(copies):
        shifted = np.roll(x_train, int(rng.integers(-1, 2)), axis=1)
        sequences.append(shifted + noise * rng.normal(size=shifted.shape))
    x_aux = np.concatenate(sequences).astype("float32")
    y_aux = np.eye(10, dtype="float32")[rng.integers(0, 10, len(x_aux))]
    return x_aux, y_aux


def _accuracy_on(model, x, y):
    return model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]


def fit_to_interpolation(model, x, y, args):
    """Clean training with Adam until 100% training accuracy; returns the epochs used."""
    model.compile(optimizer=keras.optimizers.Adam(args.clean_lr), loss="mse",
                  metrics=[accuracy()], steps_per_execution=25)
    for epoch in range(1, args.max_clean_epochs + 1):  # noqa: B007 (returned)
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
        if _accuracy_on(model, x, y) == 1.0:
            break
    return epoch


def minimum(data, y_train, seed, args, poison):
    """Normal training's minimum or the poisoned one; returns (weights, info)."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model = escape_cnn()
    info = {}
    if poison:
        x_aux, y_aux = poisoned_set(data.x_train, args.aux_copies, args.aux_noise, rng)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=[accuracy()],
                      steps_per_execution=25)
        model.fit(np.concatenate([data.x_train, x_aux]), np.concatenate([y_train, y_aux]),
                  batch_size=64, epochs=args.poison_epochs, verbose=0)
        info.update(memorised=_accuracy_on(model, x_aux, y_aux),
                    clean_after_poisoning=_accuracy_on(model, data.x_train, y_train))
    info["clean_epochs"] = fit_to_interpolation(model, data.x_train, y_train, args)
    return model.get_weights(), info


class StepTimer(keras.callbacks.Callback):
    """Wall time inside training steps after the first epoch (which includes tracing)."""

    def on_train_begin(self, logs=None):
        self.seconds, self.steps, self.epoch = 0.0, 0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.first_step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch > 0:
            self.seconds += time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        if epoch > 0:
            self.steps += int(self.model.optimizer.iterations.numpy()) - self.first_step

    def ms_per_step(self):
        return 1000 * self.seconds / self.steps if self.steps else float("nan")


def train(key, weights, data, y_train, y_test, seed, args, experiment):
    """One method from `weights` for the experiment's budget, measured every epoch."""
    inner = escape_cnn()
    inner.set_weights(weights)
    rho = getattr(args, key.replace("-", "_") + "_rho", None)
    model = keras_flat.FlatMinimaModel(inner, common.make_algorithm(key, rho), seed=seed)
    if experiment == "escape":
        optimizer, epochs = keras.optimizers.SGD(args.escape_lr), args.escape_epochs
    else:
        optimizer = keras.optimizers.SGD(args.scratch_lr, momentum=0.9)
        epochs = args.scratch_epochs
    model.compile(optimizer=optimizer, loss="mse", metrics=[accuracy()],
                  steps_per_execution=25)
    probe = (data.x_train[: args.probe_examples], y_train[: args.probe_examples])
    flatness = common.Flatness(model, probe, args.probes, 30, seed)
    start = {"train_accuracy": _accuracy_on(model, data.x_train, y_train),
             "test_accuracy": _accuracy_on(model, data.x_test, y_test), **flatness.measure()}
    per_epoch = common.EveryEpoch(lambda: {  # The top eigenvalue only at the start and end.
        "train_accuracy": _accuracy_on(model, data.x_train, y_train),
        **flatness.measure(eigenvalue=False)})
    timer = StepTimer()
    history = model.fit(data.x_train, y_train, batch_size=32, epochs=epochs, verbose=0,
                        validation_data=(data.x_test, y_test),
                        callbacks=[per_epoch, timer]).history
    curves = {key: [start[key]] + [v[key] for v in per_epoch.values]
              for key in ("train_accuracy", "hessian_trace")}
    curves["test_accuracy"] = [start["test_accuracy"]] + history["val_accuracy"]
    final = {f"{k}_{when}": v for k, curve in curves.items()
             for when, v in (("start", curve[0]), ("end", curve[-1]))}
    final["top_eigenvalue_start"] = start["top_eigenvalue"]
    final["top_eigenvalue_end"] = flatness.measure()["top_eigenvalue"]
    final["train_accuracy_lowest"] = min(curves["train_accuracy"][1:])
    final["ms_per_step"] = timer.ms_per_step()
    return {"experiment": experiment, "method": common.label(key), "key": key, "seed": seed,
            "rho": rho, "final": final, "history": curves}


# ----------------------------------------------------------------------------- tables

def _runs(runs, experiment, method):
    return [r for r in runs if r["experiment"] == experiment and r["method"] == method]


def _cell(runs, metric, digits=3, percent=False):
    return common.mean_std([r["final"][metric] for r in runs], digits, percent)


def tables(runs, references, args):
    out = {}
    if "baselines" in args.parts:
        out["baselines"] = _baseline_table(runs)
    if "escape" in args.parts:
        out["escape"] = _escape_table(runs, references, args)
    if "scratch" in args.parts:
        out["from scratch"] = _scratch_table(runs, args)
    return out


def _rho(runs):
    return f", ρ = {runs[0]['rho']:g}" if runs[0]["rho"] is not None else ""


def _baseline_table(runs):
    lines = ["| model | published test acc | test acc here (%) | train acc (%) | parameters |",
             "|---|---|---|---|---|"]
    for kind in ("cnn", "mlp"):
        rs = _runs(runs, "baseline", f"published {kind.upper()}")
        if rs:
            lines.append(f"| {kind.upper()} | {PUBLISHED[kind]:.0%} "
                         f"| {_cell(rs, 'test_accuracy', 1, True)} "
                         f"| {_cell(rs, 'train_accuracy', 1, True)} "
                         f"| {rs[0]['final']['parameters']:,} |")
    return "\n".join(lines)


def _escape_table(runs, references, args):
    lines = ["| method | train acc end / lowest (%) | test acc start → end (%) "
             "| trace start → end | top eigenvalue start → end |", "|---|---|---|---|---|"]
    for key in args.methods:
        rs = _runs(runs, "escape", common.label(key))
        lines.append(
            f"| {common.label(key)}{_rho(rs)} | {_cell(rs, 'train_accuracy_end', 2, True)} / "
            f"{_cell(rs, 'train_accuracy_lowest', 2, True)} "
            f"| {_cell(rs, 'test_accuracy_start', 1, True)} → "
            f"{_cell(rs, 'test_accuracy_end', 1, True)} "
            f"| {_cell(rs, 'hessian_trace_start', 1)} → {_cell(rs, 'hessian_trace_end', 1)} "
            f"| {_cell(rs, 'top_eigenvalue_start', 2)} → {_cell(rs, 'top_eigenvalue_end', 2)} |")
    normal = references["normal"]
    lines.append(
        "\nNormal training (Adam to 100% training accuracy, no poisoning): test accuracy "
        f"{common.mean_std([n['test_accuracy'] for n in normal], 1, True)} %, Hessian trace "
        f"{common.mean_std([n['hessian_trace'] for n in normal], 1)}.")
    return "\n".join(lines)


def _scratch_table(runs, args):
    lines = ["| method | train acc (%) | test acc (%) | Hessian trace | top eigenvalue "
             "| ms/step |", "|---|---|---|---|---|---|"]
    for key in args.methods:
        rs = _runs(runs, "scratch", common.label(key))
        lines.append(
            f"| {common.label(key)}{_rho(rs)} | {_cell(rs, 'train_accuracy_end', 2, True)} "
            f"| {_cell(rs, 'test_accuracy_end', 1, True)} "
            f"| {_cell(rs, 'hessian_trace_end', 1)} | {_cell(rs, 'top_eigenvalue_end', 2)} "
            f"| {_cell(rs, 'ms_per_step', 1)} |")
    return "\n".join(lines)


def plot(runs, args, filename):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10.5, 7))
    for row, (experiment, title) in enumerate((("escape", "from the poisoned minimum"),
                                               ("scratch", "from scratch"))):
        for key in args.methods:
            rs = _runs(runs, experiment, common.label(key))
            for col, metric in enumerate(("hessian_trace", "test_accuracy")):
                curves = np.array([r["history"][metric] for r in rs])
                epochs = np.arange(curves.shape[1])
                line, = axes[row, col].plot(epochs, curves.mean(0), label=common.label(key))
                if len(rs) > 1:
                    axes[row, col].fill_between(epochs, curves.min(0), curves.max(0),
                                                color=line.get_color(), alpha=0.15)
        axes[row, 0].set(xlabel="epoch", ylabel="Hessian trace (512 training examples)",
                         title=f"Sharpness, {title}")
        axes[row, 1].set(xlabel="epoch", ylabel="test accuracy",
                         title=f"Generalisation, {title}")
    axes[0, 1].legend(fontsize="small")
    fig.suptitle(f"MNIST-1D, CNN, mean over {len(args.seeds)} seeds (range shaded)")
    fig.tight_layout()
    fig.savefig(filename, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------- main

def merge(args, out, argv):
    """Tables and plot of several runs' results.json (same settings, other seeds)."""
    import json

    runs, references, times, settings = [], {"normal": [], "poisoned": []}, [], None
    for directory in args.merge:
        with open(os.path.join(directory, "results.json")) as f:
            part = json.load(f)
        mine = {k: v for k, v in part["settings"].items()
                if k not in ("seeds", "output_dir", "merge")}
        if settings is not None and mine != settings:
            raise ValueError(f"Cannot merge {directory}: its settings differ from the first "
                             f"directory's ({mine} != {settings}).")
        settings = mine
        runs += part["runs"]
        for name in references:
            references[name] += part["minima"][name]
        times.append(part["time"])
    for key, value in settings.items():
        setattr(args, key, value)
    args.seeds = sorted({r["seed"] for r in runs})
    plot(runs, args, os.path.join(out, f"{EXAMPLE}.png"))
    return common.write_results(out, EXAMPLE, vars(args), runs, tables(runs, references, args),
                                {"minima": references, "merged_times": times}, None, argv)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="seeds; each runs every part (default 0 1 2 3 4)")
    parser.add_argument("--parts", nargs="+", default=["baselines", "escape", "scratch"],
                        choices=["baselines", "escape", "scratch"], help="what to run")
    parser.add_argument("--algorithms", dest="methods", nargs="+", default=list(common.METHODS),
                        choices=list(common.METHODS),
                        help="methods of parts 2 and 3 (default: all)")
    add_renamed_flag(parser, "--methods", "--algorithms")
    parser.add_argument("--baseline-steps", type=int, default=6000,
                        help="training steps of the baselines (6000, the authors')")
    parser.add_argument("--aux-copies", type=int, default=4,
                        help="perturbed, randomly labelled copies of the training set (4)")
    parser.add_argument("--aux-noise", type=float, default=0.1,
                        help="standard deviation of their Gaussian noise (0.1; data std 1)")
    parser.add_argument("--poison-epochs", type=int, default=40,
                        help="epochs of joint training with the auxiliary set (40)")
    parser.add_argument("--clean-learning-rate", dest="clean_lr", type=float, default=1e-3,
                        help="Adam learning rate of clean training to 100%% (1e-3)")
    add_renamed_flag(parser, "--clean-lr", "--clean-learning-rate")
    parser.add_argument("--max-clean-epochs", type=int, default=200,
                        help="cap on clean epochs to reach 100%% training accuracy (200)")
    parser.add_argument("--escape-epochs", type=int, default=30,
                        help="epochs from the poisoned minimum (30)")
    parser.add_argument("--escape-learning-rate", dest="escape_lr", type=float, default=0.01,
                        help="constant SGD learning rate from the poisoned minimum (0.01)")
    add_renamed_flag(parser, "--escape-lr", "--escape-learning-rate")
    parser.add_argument("--scratch-epochs", type=int, default=30,
                        help="epochs of training from scratch (30)")
    parser.add_argument("--scratch-learning-rate", dest="scratch_lr", type=float, default=0.1,
                        help="SGD learning rate (momentum 0.9) from scratch (0.1)")
    add_renamed_flag(parser, "--scratch-lr", "--scratch-learning-rate")
    parser.add_argument("--sam-rho", type=float, default=0.05, help="SAM radius (0.05)")
    parser.add_argument("--rs-rho", type=float, default=4.0, help="RS radius (4.0)")
    parser.add_argument("--sa-rho", type=float, default=0.1, help="SA radius (0.1)")
    parser.add_argument("--sa-ca-rho", type=float, default=0.1,
                        help="radius of SA with center and antithetic (0.1)")
    parser.add_argument("--num-probes", dest="probes", type=int, default=8,
                        help="Hutchinson probes per trace measurement (8, the same each time)")
    add_renamed_flag(parser, "--probes", "--num-probes")
    parser.add_argument("--probe-examples", type=int, default=512,
                        help="training examples the Hessian is measured on (512)")
    parser.add_argument("--train-examples", type=int, default=None,
                        help="use only the first N training sequences (default: all 4,000)")
    parser.add_argument("--no-jit", dest="jit", action="store_false",
                        help="do not compile the baselines' training steps with XLA")
    parser.add_argument("--merge", nargs="+", metavar="DIR", default=None,
                        help="instead of running, combine the results.json of runs with the "
                             "same settings and different seeds (e.g. run in parallel) into "
                             "one set of tables and plot in --output-dir")
    common.add_output_argument(parser, EXAMPLE)
    parser.add_argument("--quick", action="store_true",
                        help="a short run for tests: seed 0, plain SGD and SA only, the "
                             "first 1,000 training sequences, a few epochs everywhere")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.methods, args.train_examples = [0], ["none", "sa"], 1000
        args.baseline_steps, args.poison_epochs, args.aux_copies = 200, 10, 2
        args.escape_epochs, args.scratch_epochs, args.probes = 6, 2, 4
        args.probe_examples, args.max_clean_epochs = 256, 100
    clock = common.Clock()
    out = common.output_dir(args.output_dir)
    if args.merge:
        return merge(args, out, argv)
    data = datasets.mnist1d(sequence_shape=True)
    if args.train_examples:
        data.x_train, data.y_train = (data.x_train[: args.train_examples],
                                      data.y_train[: args.train_examples])
    eye = np.eye(10, dtype="float32")
    y_train, y_test = eye[data.y_train], eye[data.y_test]
    runs, references = [], {"normal": [], "poisoned": []}
    parts = {part: common.Clock() for part in ("baselines", "minima", "escape", "scratch")}
    spent = {part: {"wall_seconds": 0.0, "cpu_seconds": 0.0} for part in parts}

    def timed(part):
        report = parts[part].report()
        for k in spent[part]:
            spent[part][k] += report[k]
        parts[part] = common.Clock()

    for seed in args.seeds:
        parts["baselines"] = common.Clock()
        if "baselines" in args.parts:
            for kind in ("cnn", "mlp"):
                runs.append(baseline(kind, data, seed, args))
                print(f"seed {seed}, published {kind.upper()}: test accuracy "
                      f"{runs[-1]['final']['test_accuracy']:.4f}", flush=True)
        timed("baselines")
        parts["minima"] = common.Clock()
        if "escape" in args.parts:
            for poison, name in ((False, "normal"), (True, "poisoned")):
                weights, info = minimum(data, y_train, seed, args, poison)  # Poisoned last.
                model = escape_cnn()
                model.set_weights(weights)
                model.compile(loss="mse", metrics=[accuracy()])
                probe = (data.x_train[: args.probe_examples], y_train[: args.probe_examples])
                info.update(seed=seed, test_accuracy=_accuracy_on(model, data.x_test, y_test),
                            **common.Flatness(model, probe, args.probes, 30, seed).measure())
                references[name].append(info)
                print(f"seed {seed}, {name} minimum: {info}", flush=True)
            timed("minima")
            parts["escape"] = common.Clock()
            for key in args.methods:
                runs.append(train(key, weights, data, y_train, y_test, seed, args, "escape"))
                print(f"seed {seed}, escape, {common.label(key)}: "
                      f"{runs[-1]['final']}", flush=True)
            timed("escape")
        parts["scratch"] = common.Clock()
        if "scratch" in args.parts:
            keras.utils.set_random_seed(seed)
            initial = escape_cnn().get_weights()
            for key in args.methods:
                runs.append(train(key, initial, data, y_train, y_test, seed, args, "scratch"))
                print(f"seed {seed}, from scratch, {common.label(key)}: "
                      f"{runs[-1]['final']}", flush=True)
            timed("scratch")
    shown = tables(runs, references, args)
    if "escape" in args.parts and "scratch" in args.parts:
        plot(runs, args, os.path.join(out, f"{EXAMPLE}.png"))
    results = common.write_results(out, EXAMPLE, vars(args), runs, shown,
                                   {"minima": references, "time_per_part": spent}, clock, argv)
    print("time per part:", {k: {m: round(v) for m, v in t.items()} for k, t in spent.items()})
    return results


if __name__ == "__main__":
    main()
