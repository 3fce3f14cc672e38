"""Compare plain training, SAM and the paper's algorithms on one model.

This is what `keras-flat demo` runs: the same model, initial weights, data,
optimizer and number of epochs for every algorithm; the Hessian trace and
top eigenvalue measured every epoch on a fixed probe set; a table of the
minima each algorithm found and a plot of trace and test accuracy per epoch.
"""

import dataclasses
import inspect
import os
import time

import keras
import numpy as np

from keras_flat import algorithms
from keras_flat import callbacks as flat_callbacks
from keras_flat.app import datasets
from keras_flat.training.model import FlatMinimaModel
from keras_flat.utils.deprecation import renamed_arguments

LOSSES = ("mse", "crossentropy")


@dataclasses.dataclass
class RunResult:
    """One algorithm's run: final numbers and per-epoch history."""

    algorithm: str
    seed: int
    train_accuracy: float
    test_accuracy: float
    train_loss: float
    hessian_trace: float
    hessian_trace_stderr: float
    top_eigenvalue: float
    ms_per_step: float
    history: dict
    model: object = dataclasses.field(default=None, repr=False, compare=False)


class StepTimer(keras.callbacks.Callback):
    """Accumulates wall time spent inside training batches (not callbacks)."""

    def on_train_begin(self, logs=None):
        self.seconds, self.steps = 0.0, 0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds += time.perf_counter() - self._start
        self.steps += 1


def build_mlp(input_shape, num_classes, hidden=64, seed=0):
    """The demo's model: Flatten, one tanh hidden layer, linear logits."""
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Flatten(),
        keras.layers.Dense(hidden, activation="tanh",
                           kernel_initializer=keras.initializers.GlorotUniform(seed)),
        keras.layers.Dense(num_classes,
                           kernel_initializer=keras.initializers.GlorotUniform(seed + 1)),
    ])


def make_algorithm(name, rho=None, sa_paper_rule=False, **kwargs):
    """A registered algorithm by name, with the demo's settings.

    The demo's settings are the registry's `defaults` of the rule (a
    radius suited to the demo's model) and, for SA, `center=True,
    antithetic=True`; `demo_settings` lists those that differ from the
    class's own defaults.

    `rho` (or `sigma` for the random-weight rules) overrides the default
    radius when given. SA is centered and antithetic unless
    `sa_paper_rule`: with mini-batches far from interpolation, the paper's
    single-example rule adds that example's gradient and a `±rho ∇²f_i s`
    kick to every step, noise that costs accuracy at practical learning
    rates; both options keep the expected step and remove that noise.
    """
    entry = algorithms.registry.entry(name)
    if rho is not None:
        kwargs[radius_argument(name)] = rho
    if entry.name == "sa" and not sa_paper_rule:
        kwargs = {"center": True, "antithetic": True, **kwargs}
    return entry.build(**kwargs)


def radius_argument(name):
    """The name of an algorithm's radius argument (`rho` or `sigma`), or None."""
    defaults = algorithms.registry.entry(name).defaults
    return next((k for k in ("rho", "sigma") if k in defaults), None)


def default_radius(name):
    """The demo's default radius of a registered algorithm, or None."""
    key = radius_argument(name)
    return None if key is None else algorithms.registry.entry(name).defaults[key]


def class_default(name, argument):
    """The default of `argument` in the class of registered rule `name` (or None)."""
    parameter = inspect.signature(algorithms.registry.entry(name).cls).parameters.get(argument)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return None
    return parameter.default


def _demo_arguments(name, sa_paper_rule=False):
    """The arguments the demo gives rule `name` by default."""
    arguments = dict(algorithms.registry.entry(name).defaults)
    if algorithms.registry.entry(name).name == "sa" and not sa_paper_rule:
        arguments.update(center=True, antithetic=True)
    return arguments


def describe_default(name, argument):
    """The demo's default of a rule's argument, for `--help`, labelled if it is not the class's.

    Example: `"2.0 (a demo setting; RandomSmoothing's own default is 0.05)"`.
    """
    value = _demo_arguments(name).get(argument)
    own = class_default(name, argument)
    if value == own:
        return f"{value}"
    cls = algorithms.registry.entry(name).cls.__name__
    return f"{value} (a demo setting; {cls}'s own default is {own})"


def demo_settings(names, overrides=None, sa_paper_rule=False):
    """A line naming the demo's settings that differ from the classes' own defaults.

    The demo runs each rule with the registry's demo defaults (a radius
    suited to the demo's small model) rather than the class's; this says
    which and by how much, so a reader does not take the demo's numbers for
    those of `SharpnessAware()` or `RandomSmoothing()` as constructed.

    Args:
        names: The registered names the demo runs.
        overrides: `{name: radius or None}` given by the user (not noted).
        sa_paper_rule: Whether SA runs as the paper's Algorithm 2.

    Returns:
        A sentence, or "" when every setting is the class's default.
    """
    overrides = overrides or {}
    parts = []
    for name in dict.fromkeys(algorithms.registry.entry(n).name for n in names):
        entry = algorithms.registry.entry(name)
        radius = radius_argument(name)
        changed = [
            f"{key}={value} (class default {class_default(name, key)})"
            for key, value in _demo_arguments(name, sa_paper_rule).items()
            if value != class_default(name, key)
            and not (key == radius and overrides.get(name) is not None)
        ]
        if changed:
            parts.append(f"{entry.cls.__name__}: {', '.join(changed)}")
    if not parts:
        return ""
    return ("Demo settings, not the classes' own defaults: " + "; ".join(parts) + ".")


def _loss_and_targets(loss, data):
    """The compiled loss, accuracy metric and (train, test) targets."""
    if loss == "mse":
        # Squared loss on one-hot targets: interpolating minima exist, as in
        # the paper's setting, so the trace measures flatness, not margins.
        eye = np.eye(data.num_classes, dtype="float32")
        return ("mse", keras.metrics.CategoricalAccuracy(name="accuracy"),
                eye[data.y_train], eye[data.y_test])
    if loss == "crossentropy":
        return (keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                data.y_train, data.y_test)
    raise ValueError(f"Argument `loss` must be one of {list(LOSSES)}. Received: loss={loss!r}.")


@renamed_arguments(probe_size="probe_examples")
def run_one(data, algorithm, epochs, batch_size, learning_rate, seed, probe_examples=256,
            num_probes=16, hidden=64, verbose=1, initial_weights=None, model_fn=None,
            loss="mse", momentum=0.9, keep_model=False):
    """Trains one model with one algorithm and measures its flatness per epoch.

    The flatness is measured on the first `probe_examples` training
    examples. With `keep_model=True` the trained model is kept in the
    result's `model`.
    """
    keras.utils.set_random_seed(seed)
    build = model_fn or (lambda: build_mlp(data.input_shape, data.num_classes, hidden, seed))
    inner = build()
    if initial_weights is not None:
        inner.set_weights(initial_weights)
    model = FlatMinimaModel(inner, algorithm, seed=seed)
    loss_fn, metric, y_train, y_test = _loss_and_targets(loss, data)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum),
        loss=loss_fn, metrics=[metric],
    )
    probe = (data.x_train[:probe_examples], y_train[:probe_examples])
    trace = flat_callbacks.HessianTrace(probe, num_probes=num_probes, batch_size=probe_examples,
                                        num_batches=1, seed=seed)
    top = flat_callbacks.TopEigenvalue(probe, num_eigenvalues=1, batch_size=probe_examples,
                                       num_batches=1, max_iterations=40, seed=seed)
    timer = StepTimer()
    history = model.fit(
        data.x_train, y_train, batch_size=batch_size, epochs=epochs,
        validation_data=(data.x_test, y_test), callbacks=[trace, top, timer],
        verbose=verbose,
    ).history
    train = model.evaluate(data.x_train, y_train, verbose=0, return_dict=True)
    test = model.evaluate(data.x_test, y_test, verbose=0, return_dict=True)
    return RunResult(
        algorithm=algorithms.label(algorithm), seed=seed, train_accuracy=train["accuracy"],
        test_accuracy=test["accuracy"], train_loss=train["loss"],
        hessian_trace=history["hessian_trace"][-1],
        hessian_trace_stderr=history["hessian_trace_stderr"][-1],
        top_eigenvalue=history["top_eigenvalue"][-1],
        ms_per_step=1000 * timer.seconds / max(timer.steps, 1),
        history=history,
        model=model if keep_model else None,
    )


def display_name(algorithm):
    """A table label: the algorithm, its radius and any non-paper options."""
    return algorithms.label(algorithm)


@renamed_arguments(probe_size="probe_examples")
def compare(dataset="digits", names=("none", "sam", "rs", "sa"), epochs=30, batch_size=32,
            learning_rate=0.05, seeds=(0,), rhos=None, num_probes=16, probe_examples=256,
            hidden=64, verbose=1, log=print, loss="mse", sa_paper_rule=False,
            keep_models=False):
    """Runs every algorithm under the same budget, for every seed.

    With `keep_models=True` each result keeps its trained model.

    Returns:
        A list of `RunResult`, seed-major.
    """
    data = dataset if isinstance(dataset, datasets.Dataset) else datasets.load(dataset)
    rhos = dict(rhos or {})
    results = []
    for seed in seeds:
        for name in names:
            log(f"--- {algorithms.registry.entry(name).label}, seed {seed} ---")
            algorithm = make_algorithm(name, rhos.get(name), sa_paper_rule=sa_paper_rule)
            results.append(run_one(data, algorithm, epochs, batch_size, learning_rate, seed,
                                   probe_examples, num_probes, hidden, verbose, loss=loss,
                                   keep_model=keep_models))
    return results


def summary_rows(results):
    """Mean and spread (sample std) per algorithm, as dict rows."""
    rows = []
    order = list(dict.fromkeys(r.algorithm for r in results))
    fields = ("train_accuracy", "test_accuracy", "hessian_trace", "top_eigenvalue",
              "ms_per_step")
    for name in order:
        runs = [r for r in results if r.algorithm == name]
        row = {"algorithm": name, "runs": len(runs)}
        for f in fields:
            values = np.array([getattr(r, f) for r in runs], np.float64)
            row[f] = float(values.mean())
            row[f + "_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def format_table(rows):
    """A Markdown table of `summary_rows` output."""
    spread = any(r["runs"] > 1 for r in rows)

    def cell(row, f, digits):
        text = f"{row[f]:.{digits}f}"
        return f"{text} ± {row[f + '_std']:.{digits}f}" if spread else text

    lines = ["| algorithm | train acc | test acc | Hessian trace | top eigenvalue | ms/step |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['algorithm']} | {cell(r, 'train_accuracy', 4)} | {cell(r, 'test_accuracy', 4)} "
            f"| {cell(r, 'hessian_trace', 2)} | {cell(r, 'top_eigenvalue', 3)} "
            f"| {cell(r, 'ms_per_step', 2)} |")
    return "\n".join(lines)


def plot(results, path, title="keras-flat demo"):
    """Writes a PNG: Hessian trace and test accuracy per epoch, per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r.algorithm for r in results):
        runs = [r for r in results if r.algorithm == name]
        traces = np.array([r.history["hessian_trace"] for r in runs])
        accuracy = np.array([r.history["val_accuracy"] for r in runs])
        epochs = np.arange(1, traces.shape[1] + 1)
        line, = left.plot(epochs, traces.mean(0), label=name)
        right.plot(epochs, accuracy.mean(0), color=line.get_color(), label=name)
        if len(runs) > 1:
            left.fill_between(epochs, traces.min(0), traces.max(0), color=line.get_color(),
                              alpha=0.2)
            right.fill_between(epochs, accuracy.min(0), accuracy.max(0), color=line.get_color(),
                               alpha=0.2)
    left.set(xlabel="epoch", ylabel="Hessian trace (Hutchinson)", ylim=(0, None),
             title="Sharpness: tr ∇²L on the probe set")
    right.set(xlabel="epoch", ylabel="test accuracy", title="Generalisation")
    left.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@renamed_arguments(probe_size="probe_examples")
def plot_landscapes(results, data, names, output_dir, loss="mse", probe_examples=512, seed=0,
                    log=print):
    """Each run's minimum along the same random directions, on one scale.

    Writes `landscape.png` (a 1D panel and one contour per algorithm) and
    CSV files of the values into `output_dir`, and logs a table of the
    loss at each minimum, at the ends of the 1D line and its highest value
    on the plane; the loss is the training loss on the first
    `probe_examples` training examples. `results` must hold their models
    (`compare(..., keep_models=True)`).

    Returns:
        The paths written.
    """
    from keras_flat.landscape import compare_minima

    _, _, y_train, _ = _loss_and_targets(loss, data)
    probe = (data.x_train[:probe_examples], y_train[:probe_examples])
    labels = [algorithms.registry.entry(name).label for name in names]
    lines, planes, _, paths = compare_minima(
        [r.model for r in results], probe, labels, output_dir=output_dir, seed=seed,
        title=f"Training loss around each minimum ({len(probe[0])} training examples, "
              "filter-normalised random directions, seed " + str(seed) + ")")
    rows = ["| algorithm | loss at the minimum | line, at α = −1 / +1 | highest on the plane |",
            "|---|---|---|---|"]
    for label, line, plane in zip(labels, lines, planes):
        centre = line.loss[np.argmin(np.abs(line.alphas))]
        rows.append(f"| {label} | {centre:.4f} | {line.loss[0]:.4f} / {line.loss[-1]:.4f} "
                    f"| {np.max(plane.loss):.4f} |")
    log("\n" + "\n".join(rows))
    return paths
