"""Defaults panel: does every rule, at its defaults, train as well as plain Keras and end flatter?

A panel of small tasks, each trained for several seeds with plain Keras (the
inner model compiled and fitted directly, no wrapper), with the wrapper's own
default (`FlatMinimaModel(inner)`), with every registered rule at its class
defaults (`FlatMinimaModel(inner, name)`, no other argument) and with any
configuration given on the command line. For one task and seed every
configuration starts from the same initial weights and sees the training
examples in the same order (a NumPy permutation per epoch from the seed).

Tasks (`--tasks`; the settings are printed with the report):

- `digits_mlp_sgd`: the README example: scikit-learn's 8x8 digits (the
  package's fixed split), a 64-128-10 MLP, SGD(0.05, momentum 0.9), batch
  32, 10 epochs.
- `digits_mlp_adam`: the same MLP with Adam(1e-3), 30 epochs.
- `digits_cnn_bn`: digits as 8x8x1 images, `benchmarks.common.cnn` (four
  3x3 convolutions with BatchNormalization, width 16), SGD(0.05, momentum
  0.9), 20 epochs.
- `transformer`: `benchmarks.common.transformer` (dim 32, 2 heads) on a
  synthetic task generated offline with a fixed NumPy seed: sequences of
  32 tokens from a vocabulary of 24; the label is which of the tokens 1 to
  5 occurs first (5 classes). 1,000 training and 2,000 held-out sequences,
  Adam(1e-3), 30 epochs.
- `mnist1d_cnn`: MNIST-1D (`keras_flat.app.datasets.mnist1d`), the 28k CNN of
  `examples/mnist1d_benchmark.py` with its from-scratch settings: squared
  loss on one-hot labels, SGD(0.1, momentum 0.9), batch 32, 30 epochs.
- `escape`: `benchmarks.efficiency`'s run from the sharp, badly
  generalising minimum of `examples/escape_sharp_minimum.py` (its functions,
  its budget accounting: 30 epochs' worth of batch gradients at SGD learning
  rate 0.02, and its trace measurement: 32 probes on 256 training examples).
  Its "plain" is efficiency's plain SGD (the wrapper with no perturbation).

Every run records the final test and training accuracy (`evaluate`,
inference mode), the Hessian trace (Hutchinson, `keras_flat.hessian`, on the
first 512 training examples in inference mode, the same probes for every
run) with its standard error, the fraction of perturbed steps, the number of
steps and the wall time. Runs are appended as JSON lines to
`benchmarks/.cache/defaults/<label>.jsonl`, keyed by task, configuration
and seed: an interrupted panel resumes where it stopped, and a panel under
another `--label` can be compared with `--compare`.

The targets: on the from-scratch tasks, mean test accuracy within 1 point of
plain training's and a mean trace below plain's; on `escape`, trace <= 30.0
and test accuracy >= 86.8% (the wrapper default's numbers there).

Usage:
    python -m benchmarks.defaults [--tasks ...] [--seeds 0 1 2] [--label before]
        [--configs plain default sam ...] [--config "sa(center=True, rho=0.05)" ...]
        [--jobs 2] [--report FILE] [--compare LABEL] [--report-only] [--quick]
"""

import argparse
import ast
import concurrent.futures
import dataclasses
import functools
import hashlib
import importlib.util
import inspect
import json
import math
import os
import subprocess
import sys
import threading
import time
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_flat  # noqa: E402
from benchmarks import common  # noqa: E402
from benchmarks import efficiency  # noqa: E402
from keras_flat import algorithms  # noqa: E402
from keras_flat import hessian  # noqa: E402
from keras_flat.app import datasets  # noqa: E402
from keras_flat.app.cli_arguments import add_renamed_flag  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE = os.path.join(HERE, ".cache", "defaults")
SHARP_MINIMUM = os.path.join(HERE, ".cache", "sharp_minimum.npz")  # efficiency.py's cache.
DEFAULT_ALGORITHM = inspect.signature(keras_flat.FlatMinimaModel).parameters["algorithm"].default
ESCAPE_TARGET = {"trace": 30.0, "test": 0.868}  # The wrapper default's numbers on `escape`.
WITHIN = 0.01  # Test accuracy within this of plain's, from scratch.


# ----------------------------------------------------------------------------- configurations

@dataclasses.dataclass(frozen=True)
class Config:
    """One configuration: "plain" (no wrapper), "default" (`FlatMinimaModel(inner)`) or a rule."""

    name: str
    kwargs: tuple = ()  # Sorted (key, value) pairs.

    @property
    def label(self):
        if not self.kwargs:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.kwargs)})"

    def algorithm(self):
        """The algorithm (None for plain training)."""
        if self.name == "plain":
            return None
        if self.name == "default":
            return algorithms.get(DEFAULT_ALGORITHM)
        return algorithms.get(self.name, **dict(self.kwargs))

    def wrap(self, inner, seed):
        """The model to compile and fit."""
        if self.name == "plain":
            return inner
        if self.name == "default":
            return keras_flat.FlatMinimaModel(inner, seed=seed)
        return keras_flat.FlatMinimaModel(inner, self.name, seed=seed, **dict(self.kwargs))


def parse_config(text):
    """`"name"` or `"name(key=literal, ...)"` -> `Config`, checked by building the algorithm."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"Cannot parse configuration {text!r}: {error}") from None
    if isinstance(node, ast.Name):
        name, kwargs = node.id, {}
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args
          and all(k.arg for k in node.keywords)):
        name = node.func.id
        try:
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except ValueError:
            raise ValueError(f"Configuration {text!r}: arguments must be literals.") from None
    else:
        raise ValueError(f"Configuration {text!r} must be `name` or `name(key=value, ...)`.")
    name = name.lower()
    if name in ("plain", "default"):
        if kwargs:
            raise ValueError(f"Configuration {name!r} takes no arguments.")
    else:
        found = algorithms.registry.lookup(name)
        if found is None:
            raise ValueError(f"Unknown rule {name!r}; registered: {algorithms.names()}.")
        name = found.name
    config = Config(name, tuple(sorted(kwargs.items())))
    config.algorithm()  # Raises for a bad argument.
    return config


def default_configs():
    """Plain, the wrapper's default, then every registered rule at its class defaults."""
    rules = [n for n in algorithms.names() if n != "none"]
    return [Config("plain"), Config("default")] + [Config(n) for n in rules]


# ----------------------------------------------------------------------------- tasks

@dataclasses.dataclass
class Task:
    name: str
    description: str
    model: object = None  # () -> keras.Model, called right after the seed is set.
    data: object = None  # () -> (x_train, y_train, x_test, y_test).
    optimizer: object = None  # () -> optimizer.
    loss: object = None  # () -> loss.
    epochs: int = 10
    batch: int = 32
    one_hot: bool = False  # Squared loss on one-hot labels (CategoricalAccuracy).


@functools.lru_cache(maxsize=None)
def digits(image_shape=False, limit=None):
    data = datasets.load("digits", image_shape=image_shape, limit=limit)
    return data.x_train, data.y_train, data.x_test, data.y_test


@functools.lru_cache(maxsize=None)
def first_of_five(train=1000, test=2000, vocab=24, length=32, seed=1234):
    """Token sequences labelled by which of the tokens 1..5 occurs first (fixed NumPy seed)."""
    x = np.random.default_rng(seed).integers(0, vocab, (train + test, length))
    first = np.stack([np.where((x == k).any(1), (x == k).argmax(1), length)
                      for k in range(1, 6)], axis=1)
    y = first.argmin(1)  # Ties (none of the five occurs) go to class 0; they are rare.
    x = x.astype("int32")
    return x[:train], y[:train], x[train:], y[train:]


@functools.lru_cache(maxsize=None)
def mnist1d(limit=None):
    data = datasets.mnist1d(sequence_shape=True)
    eye = np.eye(10, dtype="float32")
    x_train, y_train = data.x_train[:limit], eye[data.y_train[:limit]]
    return x_train, y_train, data.x_test, eye[data.y_test]


@functools.lru_cache(maxsize=None)
def examples_module(name):
    return efficiency.load_escape() if name == "escape_sharp_minimum" else _load_example(name)


def _load_example(name):
    path = os.path.join(ROOT, "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digits_mlp():
    """The README's MLP."""
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu"),
                             keras.layers.Dense(10)])


def sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def sgd(lr):
    return lambda: keras.optimizers.SGD(lr, momentum=0.9)


def tasks(quick=False):
    """The panel's tasks; `quick` shrinks every one for a smoke test."""
    epochs = (lambda full, small: small if quick else full)
    limit = 300 if quick else None
    panel = [
        Task("digits_mlp_sgd", "digits, MLP 64-128-10, SGD(0.05, momentum 0.9), the README "
             "example", digits_mlp, lambda: digits(limit=limit), sgd(0.05), sparse_ce,
             epochs(10, 3)),
        Task("digits_mlp_adam", "digits, MLP 64-128-10, Adam(1e-3)", digits_mlp,
             lambda: digits(limit=limit), lambda: keras.optimizers.Adam(1e-3), sparse_ce,
             epochs(30, 3)),
        Task("digits_cnn_bn", "digits as 8x8x1, common.cnn(width=16): 4 conv-BN-ReLU, "
             "2 max-pools, GAP, Dense; SGD(0.05, momentum 0.9)",
             lambda: common.cnn(size=8, channels=1, width=16),
             lambda: digits(image_shape=True, limit=limit), sgd(0.05), sparse_ce,
             epochs(20, 2)),
        Task("transformer", "first of five tokens (vocabulary 24, length 32, 1,000 training "
             "/ 2,000 test sequences), common.transformer(dim=32, heads=2, hidden=64), "
             "Adam(1e-3)",
             lambda: common.transformer(dim=32, heads=2, hidden=64, classes=5, vocab=24,
                                        sequence=32),
             lambda: first_of_five(train=200 if quick else 1000, test=200 if quick else 2000),
             lambda: keras.optimizers.Adam(1e-3), sparse_ce, epochs(30, 2)),
        Task("mnist1d_cnn", "MNIST-1D (4,000 / 1,000), the 28k CNN of "
             "examples/mnist1d_benchmark.py, squared loss on one-hot labels, SGD(0.1, "
             "momentum 0.9)",
             lambda: examples_module("mnist1d_benchmark").escape_cnn(),
             lambda: mnist1d(limit=500 if quick else None), sgd(0.1), lambda: "mse",
             epochs(30, 2), one_hot=True),
        Task("escape", "benchmarks.efficiency from the sharp minimum of "
             "examples/escape_sharp_minimum.py: SGD(0.02), a budget of "
             f"{2 if quick else 30} epochs of batch gradients; trace on 256 examples, 32 probes",
             epochs=2 if quick else 30),
    ]
    return {task.name: task for task in panel}


TASK_NAMES = list(tasks())


# ----------------------------------------------------------------------------- one run

def _fingerprint(weights):
    digest = hashlib.sha1()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()[:12]


def _accuracy(one_hot):
    return keras.metrics.CategoricalAccuracy(name="accuracy") if one_hot else "accuracy"


def epoch_batches(x, y, epochs, batch, seed):
    """All epochs' batches, each epoch in its own order (a NumPy permutation from `seed`).

    One dataset for one `fit(epochs=epochs, steps_per_epoch=steps)` call: Keras
    keeps iterating it across epochs, and `fit` plans all the steps (rules
    with a `start` fraction or a schedule over training read that plan).
    Returns the dataset and the steps per epoch.
    """
    order = np.random.default_rng(seed)
    permutations = np.stack([order.permutation(len(x)) for _ in range(epochs)])
    dataset = tf.data.Dataset.from_tensor_slices(permutations).flat_map(
        lambda p: tf.data.Dataset.from_tensor_slices(p).batch(batch))
    dataset = dataset.map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
    return dataset.prefetch(2), math.ceil(len(x) / batch)


def run_scratch(task, config, seed, args):
    """One configuration of a from-scratch task for one seed; returns its record."""
    x_train, y_train, x_test, y_test = task.data()
    keras.utils.set_random_seed(seed)
    inner = task.model()
    initial = _fingerprint(inner.get_weights())
    model = config.wrap(inner, seed)
    model.compile(optimizer=task.optimizer(), loss=task.loss(),
                  metrics=[_accuracy(task.one_hot)])
    batches, steps = epoch_batches(x_train, y_train, task.epochs, task.batch, seed)
    started = time.perf_counter()
    history = model.fit(batches, epochs=task.epochs, steps_per_epoch=steps, shuffle=False,
                        verbose=0).history
    seconds = time.perf_counter() - started
    test = model.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)
    train = model.evaluate(x_train, y_train, batch_size=256, verbose=0, return_dict=True)
    probe = (x_train[: args.probe_examples], y_train[: args.probe_examples])
    estimate = hessian.hessian_trace(model, probe, num_probes=args.probes, seed=0)
    return {
        "test": float(test["accuracy"]), "train": float(train["accuracy"]),
        "test_loss": float(test["loss"]), "train_loss": float(train["loss"]),
        "trace": estimate.value, "trace_stderr": estimate.stderr, "probes": args.probes,
        "probe_examples": len(probe[0]),
        "perturbed": _mean(history.get("perturbed")),
        "skipped": float(np.sum(history["skipped_steps"])) if "skipped_steps" in history else 0.0,
        "steps": int(model.optimizer.iterations.numpy()), "epochs": task.epochs,
        "seconds": seconds, "initial_weights": initial,
    }


def run_escape(task, config, seed, args):
    """One configuration from the sharp minimum, through `benchmarks.efficiency.run`."""
    escape = examples_module("escape_sharp_minimum")
    data = datasets.load("digits", image_shape=True, seed=0)
    eye = np.eye(10, dtype="float32")
    y_train, y_test = eye[data.y_train], eye[data.y_test]
    weights = efficiency.sharp_start(escape, data, y_train, SHARP_MINIMUM)
    probe = (data.x_train[:256], y_train[:256])
    start = escape.cnn()
    start.set_weights(weights)
    start.compile(loss="mse", metrics=[_accuracy(True)])
    start_trace = efficiency.trace_of(start, probe)
    start_test = start.evaluate(data.x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    built = []

    def cnn():  # efficiency.run builds the model with this; kept to measure it afterwards.
        built.append(escape.cnn())
        return built[-1]

    name = f"defaults panel: {config.label}"
    efficiency.CONFIGS[name] = config.algorithm
    started = time.perf_counter()
    result = efficiency.run(types.SimpleNamespace(cnn=cnn), name, weights, data, y_train, y_test,
                            probe, task.epochs, seed, args.escape_lr)
    seconds = time.perf_counter() - started
    inner = built[-1]
    inner.compile(loss="mse", metrics=[_accuracy(True)])
    train = inner.evaluate(data.x_train, y_train, verbose=0, return_dict=True)
    estimate = hessian.hessian_trace(inner, probe, num_probes=32, seed=0)  # efficiency's probes.
    return {
        "test": float(result["test"]), "train": float(train["accuracy"]),
        "train_loss": float(train["loss"]),
        "trace": float(result["trace"]), "trace_stderr": estimate.stderr, "probes": 32,
        "probe_examples": len(probe[0]),
        "perturbed": float(result["fraction"]) if config.name != "plain" else None,
        "steps": int(result["epochs"]) * math.ceil(len(data.x_train) / efficiency.BATCH),
        "epochs": int(result["epochs"]), "evaluations": float(result["evaluations"]),
        "seconds": seconds, "start_trace": float(start_trace), "start_test": float(start_test),
        "initial_weights": _fingerprint(weights),
    }


def _mean(values):
    return None if not values else float(np.mean(values))


def run_one(task, config, seed, args):
    keras.backend.clear_session()
    started = time.perf_counter()
    runner = run_escape if task.name == "escape" else run_scratch
    record = runner(task, config, seed, args)
    algorithm = config.algorithm()
    record.update(task=task.name, config=config.label, seed=seed,
                  algorithm=None if algorithm is None else algorithms.serialize(algorithm),
                  total_seconds=time.perf_counter() - started, quick=args.quick,
                  threads=args.threads, time=time.strftime("%Y-%m-%d %H:%M:%S"))
    return record


# ----------------------------------------------------------------------------- the panel

def cache_path(args, label=None):
    name = f"{label or args.label}{'-quick' if args.quick else ''}.jsonl"
    return os.path.join(args.cache_dir, name)


def load_records(path):
    records = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    records[(r["task"], r["config"], r["seed"])] = r
    return records


def _worker_command(task, config, seeds, args):
    command = [sys.executable, "-m", "benchmarks.defaults", "--worker", "--tasks", task,
               "--configs", config.label, "--seeds", *map(str, seeds), "--threads", "1",
               "--cache-dir", args.cache_dir,
               "--num-probes", str(args.probes), "--probe-examples", str(args.probe_examples),
               "--escape-learning-rate", str(args.escape_lr)]
    return command + (["--quick"] if args.quick else [])


def run_panel(groups, args, path, log):
    """Runs the missing (task, config, seeds) groups; appends each record to `path`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lock = threading.Lock()
    total, done, started = sum(len(g[2]) for g in groups), [0], time.perf_counter()

    def save(record):
        with lock:
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
            done[0] += 1
            elapsed = (time.perf_counter() - started) / 60
            log(f"[{done[0]}/{total}, {elapsed:.0f} min, about "
                f"{elapsed * (total - done[0]) / done[0]:.0f} min left] "
                f"{record['task']} {record['config']} seed {record['seed']}: test "
                f"{record['test']:.4f} train {record['train']:.4f} trace {record['trace']:.2f} "
                f"± {record['trace_stderr']:.2f}, perturbed {record['perturbed']}, "
                f"{record['seconds']:.0f} s")

    if args.jobs <= 1:
        for task, config, seeds in groups:
            for seed in seeds:
                save(run_one(task, config, seed, args))
        return

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def work(group):
        task, config, seeds = group
        process = subprocess.Popen(_worker_command(task.name, config, seeds, args), cwd=ROOT,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        errors = []
        drain = threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True)
        drain.start()
        for line in process.stdout:
            if line.startswith("RECORD "):
                save(json.loads(line[len("RECORD "):]))
        process.wait()
        drain.join()
        if process.returncode:
            log(f"FAILED {task.name} {config.label} {seeds} (exit {process.returncode}):\n"
                + "".join(errors[-30:]))

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(work, groups))


def prepare(task_names, args, log):
    """Builds what every worker would otherwise build at once: the sharp minimum."""
    if "escape" in task_names and not os.path.exists(SHARP_MINIMUM):
        log("Building the sharp minimum once (examples/escape_sharp_minimum.py's recipe) ...")
        data = datasets.load("digits", image_shape=True, seed=0)
        efficiency.sharp_start(examples_module("escape_sharp_minimum"), data,
                               np.eye(10, dtype="float32")[data.y_train], SHARP_MINIMUM)


# ----------------------------------------------------------------------------- the report

def _stats(values):
    values = np.array([v for v in values if v is not None], dtype=float)
    if not len(values):
        return float("nan"), float("nan")
    return float(np.mean(values)), float(np.std(values))


def _cell(values, scale=1.0, digits=1):
    mean, std = _stats(values)
    if math.isnan(mean):
        return "nan"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def meets_target(task, rows, plain):
    """True / False / None (no plain reference) for a configuration's runs."""
    test, _ = _stats([r["test"] for r in rows])
    trace, _ = _stats([r["trace"] for r in rows])
    if task == "escape":
        return trace <= ESCAPE_TARGET["trace"] and test >= ESCAPE_TARGET["test"]
    if not plain:
        return None
    plain_test, _ = _stats([r["test"] for r in plain])
    plain_trace, _ = _stats([r["trace"] for r in plain])
    return bool(test >= plain_test - WITHIN and trace < plain_trace)


def report(task_list, configs, seeds, records, args, compare=None):
    lines = [f"# Defaults panel, label `{args.label}`{' (quick)' if args.quick else ''}", "",
             f"Machine: {common.machine()}", "",
             f"Seeds {list(seeds)}; cells are mean ± standard deviation over seeds. Trace: "
             f"Hutchinson, {args.probes} probes on the first {args.probe_examples} training "
             "examples (escape: efficiency.py's 32 probes on 256), the same probes for every "
             "run; s.e. is the mean standard error of one run's estimate. Targets: from "
             f"scratch, mean test accuracy at most {100 * WITHIN:g} point below plain's and "
             f"a mean trace below plain's; escape, trace <= {ESCAPE_TARGET['trace']:g} and "
             f"test accuracy >= {100 * ESCAPE_TARGET['test']:g}%.", ""]
    passed = {}
    for task in task_list:
        rows = {c.label: [records[(task.name, c.label, s)] for s in seeds
                          if (task.name, c.label, s) in records] for c in configs}
        plain = rows.get("plain", [])
        lines += [f"## {task.name}", "", f"{task.description}; batch {task.batch}, "
                  f"{task.epochs} epochs{' of budget' if task.name == 'escape' else ''}."]
        if task.name == "escape" and plain:
            lines.append(f"Start (the sharp minimum): trace {plain[0]['start_trace']:.1f}, "
                         f"test accuracy {100 * plain[0]['start_test']:.1f}%.")
        inits = {(r["seed"], r.get("initial_weights")) for rs in rows.values() for r in rs}
        if len(inits) > len({seed for seed, _ in inits}):
            lines.append("**Warning: configurations of one seed started from different "
                         "weights.**")
        plain_test, _ = _stats([r["test"] for r in plain])
        plain_trace, _ = _stats([r["trace"] for r in plain])
        columns = ["configuration", "test acc (%)", "train acc (%)", "Hessian trace",
                   "trace s.e.", "Δ test vs plain (points)", "trace / plain", "perturbed",
                   "steps", "s/run", "meets target"]
        if compare is not None:
            columns[5:5] = [f"test acc ({args.compare})", f"trace ({args.compare})"]
        lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for config in configs:
            rs = rows[config.label]
            if not rs:
                continue
            test, _ = _stats([r["test"] for r in rs])
            trace, _ = _stats([r["trace"] for r in rs])
            fraction, _ = _stats([r.get("perturbed") for r in rs])
            ok = meets_target(task.name, rs, plain)
            if config.name != "plain" or task.name == "escape":
                passed[(config.label, task.name)] = ok
            cells = [
                config.label + ("" if len(rs) == len(seeds) else f" (n={len(rs)})"),
                _cell([r["test"] for r in rs], 100), _cell([r["train"] for r in rs], 100),
                _cell([r["trace"] for r in rs], digits=2),
                f"{_stats([r['trace_stderr'] for r in rs])[0]:.2f}",
                f"{100 * (test - plain_test):+.1f}" if config.name != "plain" else "",
                f"{trace / plain_trace:.2f}" if config.name != "plain" else "",
                "" if math.isnan(fraction) else f"{fraction:.2f}",
                f"{_stats([r['steps'] for r in rs])[0]:.0f}",
                f"{_stats([r['seconds'] for r in rs])[0]:.0f}",
                {True: "yes", False: "no", None: ""}[ok]
                if config.name != "plain" or task.name == "escape" else "(reference)",
            ]
            if compare is not None:
                old = [compare[(task.name, config.label, s)] for s in seeds
                       if (task.name, config.label, s) in compare]
                cells[5:5] = [_cell([r["test"] for r in old], 100) if old else "",
                              _cell([r["trace"] for r in old], digits=2) if old else ""]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Summary: meets the targets", "",
              "| configuration | " + " | ".join(t.name for t in task_list) + " | passed |",
              "|" + "---|" * (len(task_list) + 2)]
    for config in configs:
        marks = [passed.get((config.label, t.name)) for t in task_list]
        if config.name == "plain":
            marks = [passed.get((config.label, "escape")) if t.name == "escape" else "ref"
                     for t in task_list]
        if all(m is None or m == "ref" for m in marks):
            continue
        cells = [{True: "pass", False: "fail", None: "–", "ref": "ref"}[m] for m in marks]
        judged = [m for m in marks if m not in ("ref", None)]
        lines.append(f"| {config.label} | " + " | ".join(cells)
                     + f" | {sum(m is True for m in judged)}/{len(judged)} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=TASK_NAMES, choices=TASK_NAMES)
    parser.add_argument("--configs", nargs="+", default=None,
                        help="configurations instead of the default list (plain, default and "
                             "every registered rule): names or `name(key=value, ...)`; plain "
                             "is always added")
    parser.add_argument("--config", action="append", default=[],
                        help="an extra configuration, e.g. \"sa(center=True, rho=0.05)\" "
                             "(repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--label", default="before",
                        help="name of the panel: its cache file and report title (before)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="parallel worker processes, one per (task, configuration), each "
                             "with 1 TensorFlow thread (1: run in this process)")
    parser.add_argument("--num-probes", dest="probes", type=int, default=64,
                        help="Hutchinson probes (64)")
    add_renamed_flag(parser, "--probes", "--num-probes")
    parser.add_argument("--probe-examples", type=int, default=512,
                        help="first training examples the trace is measured on (512)")
    parser.add_argument("--escape-learning-rate", dest="escape_lr", type=float, default=0.02,
                        help="SGD learning rate from the sharp minimum (0.02, efficiency's)")
    add_renamed_flag(parser, "--escape-lr", "--escape-learning-rate")
    parser.add_argument("--cache-dir", default=CACHE,
                        help="where the runs are stored (benchmarks/.cache/defaults)")
    parser.add_argument("--report", default=None, help="also write the report to this file")
    parser.add_argument("--compare", default=None, metavar="LABEL",
                        help="add another panel's test accuracy and trace to the tables")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing; report what the cache holds")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings for a smoke test (a separate cache file)")
    parser.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.probes, args.probe_examples = min(args.probes, 8), min(args.probe_examples, 128)
    return args


def main(argv=None):
    args = parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # Not the Hessian operator's retracing warnings.
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    panel = tasks(args.quick)
    task_list = [panel[name] for name in args.tasks]
    if args.worker:  # One group, records on stdout for the parent.
        config = parse_config(args.configs[0])
        for seed in args.seeds:
            record = run_one(task_list[0], config, seed, args)
            print("RECORD " + json.dumps(record), flush=True)
        return None
    chosen = ([parse_config(c) for c in args.configs] if args.configs is not None
              else default_configs())
    extra = [parse_config(c) for c in args.config]
    if Config("plain") not in chosen:
        chosen.insert(0, Config("plain"))
    shown = list(dict.fromkeys(chosen + extra))
    path = cache_path(args)
    records = load_records(path)
    if args.report_only and args.configs is None and not args.config:
        seen = list(dict.fromkeys(r["config"] for r in records.values()))
        known = {c.label for c in shown}
        shown += [parse_config(label) for label in seen if label not in known]

    def log(message):
        print(message, file=sys.stderr, flush=True)

    if not args.report_only:
        # Priority: plain, the wrapper default, the extra configurations, then the rest.
        order = ([c for c in shown if c.name == "plain"] + [c for c in shown if c.name == "default"]
                 + extra + [c for c in chosen if c.name not in ("plain", "default")])
        order = list(dict.fromkeys(order))
        groups = []
        for config in order:
            for task in task_list:
                missing = [s for s in args.seeds if (task.name, config.label, s) not in records]
                if missing:
                    groups.append((task, config, missing))
        log(f"{len(groups)} groups ({sum(len(g[2]) for g in groups)} runs) to run; cache {path}")
        for task in task_list:
            log(f"  {task.name}: {task.description}; batch {task.batch}, {task.epochs} epochs")
        if groups:
            prepare({g[0].name for g in groups}, args, log)
            run_panel(groups, args, path, log)
        records = load_records(path)
    compare = None
    if args.compare:
        compare = load_records(cache_path(args, args.compare))
    text = report(task_list, shown, args.seeds, records, args, compare)
    print(text)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text)
    return text


if __name__ == "__main__":
    main()
