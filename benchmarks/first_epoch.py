"""First-epoch time (tracing and compilation included) of every rule, relative to plain Keras.

A new user's first `fit` pays for tracing the training step, TensorFlow's
graph optimisation (grappler) and, with `jit_compile=True`, XLA compilation,
before the first step runs. This script measures the wall time of the first
epoch of `fit` (from the call of `fit` to the end of epoch 1, so everything
`fit` does before the first step is included) and of the second epoch, for
plain `keras.Model` training, for the wrapper's default
`FlatMinimaModel(inner)` (`keras_flat.algorithms.default()`) and for every
registered rule with its class defaults (`FlatMinimaModel(inner, name)`),
on the same model and data.

Every measurement runs in its own fresh Python process, so no tracing or
compilation cache carries over from one to the next. The variants of one
model and `jit_compile` setting run in rounds, the order rotating from round
to round, with a plain run before the first variant, after every
`--plain-every` variants and after the last: each variant's time is divided
by the mean of the two plain runs bracketing it, and the table reports the
median of these ratios over the rounds (a shared machine's load drifts over
minutes; bracketing pairs every run with plain runs made under nearly the
same load), and median absolute seconds. The target is a first-epoch ratio
of at most 2.

Columns: `first x` is the first epoch's time over plain's first epoch,
`second x` the same for the second epoch (no tracing: the per-step cost over
a short epoch); `first s` and `second s` the median wall seconds;
`first step s` the seconds from the call of `fit` to the end of the first
step (tracing, graph optimisation, compilation and one step);
`first CPU x` the ratio of process CPU time over the first epoch (less
sensitive than wall time to other jobs on the machine, but it counts every
thread, so parallel compilation counts double).

Models (each trained on a few dozen batches, so the first epoch is
dominated by tracing and compilation, as in a short first run; the number
of examples is a multiple of the batch size, so no partial last batch
retraces the step):

- `transformer`: `benchmarks.common.transformer` (Embedding,
  MultiHeadAttention, LayerNormalization, Dropout; ~100k parameters), Adam
  1e-3, random tokens, batch 64.
- `mobilenet`: `keras.applications.MobileNetV3Small(input_shape=(32, 32,
  3), weights=None, include_top=True, classes=10)` (random weights; no
  download), Adam 1e-3, random images, batch 64, trained as a fine-tune:
  with `--finetune head` (default) every layer before the top's global
  average pooling is frozen (`trainable=False`, so its BatchNorm layers run
  in inference mode) and the top (`conv_2` and `logits`, 0.6M parameters)
  trains; with `--finetune all` every layer trains.
- `digits`: the README's MLP on scikit-learn's digits (64 inputs,
  Dense(128, relu), Dense(10)), SGD 0.05 with momentum 0.9, batch 32.

Every model compiles with `SparseCategoricalCrossentropy` and the
`accuracy` metric.

Usage:
    python -m benchmarks.first_epoch [--models transformer mobilenet digits]
        [--rules default none sam ...] [--repeats 3] [--jit both|on|off]
        [--steps 32] [--plain-every 3] [--finetune head|all] [--quick]

`--quick` (one round, digits only, SA only, `jit_compile=False`, 4 steps) is
a smoke run of the whole pipeline. Expect about 30-60 s per process for the
transformer and MobileNet on two cores, most of it the first epoch of the
costlier rules.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = ("transformer", "mobilenet", "digits")
BATCH_SIZE = {"transformer": 64, "mobilenet": 64, "digits": 32}
PLAIN = "plain"
DEFAULT = "default"  # FlatMinimaModel(inner): the wrapper's default rule.
FIELDS = ("first", "second", "first_step", "cpu_first", "cpu_second")


# --- One measurement (runs in a fresh worker process) -------------------------------


def _data(model_name, steps):
    import numpy as np

    from benchmarks import common

    n = steps * BATCH_SIZE[model_name]
    if model_name == "transformer":
        return common.data("transformer", steps, batch_size=BATCH_SIZE[model_name])
    if model_name == "mobilenet":
        rng = np.random.default_rng(0)
        x = rng.uniform(0.0, 255.0, (n, 32, 32, 3)).astype("float32")
        return x, rng.integers(0, 10, n)
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    repeat = -(-n // len(x))  # More steps than the data set holds: repeat it.
    return np.concatenate([x] * repeat)[:n], np.concatenate([y] * repeat)[:n]


def build_inner(model_name, finetune="head"):
    """The inner model, its optimizer and its loss."""
    import keras

    from benchmarks import common

    if model_name == "transformer":
        return (common.transformer(), keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if model_name == "mobilenet":
        model = keras.applications.MobileNetV3Small(
            input_shape=(32, 32, 3), weights=None, include_top=True, classes=10)
        if finetune == "head":
            top = next(i for i, layer in enumerate(model.layers)
                       if isinstance(layer, keras.layers.GlobalAveragePooling2D))
            for layer in model.layers[:top]:
                layer.trainable = False
        # The top ends in a softmax.
        return (model, keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=False))
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])
    return (model, keras.optimizers.SGD(0.05, momentum=0.9),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def build(model_name, variant, jit, finetune="head"):
    """The compiled model of one variant: plain Keras, the default wrapper or a rule."""
    import keras

    import keras_flat

    keras.utils.set_random_seed(0)
    inner, optimizer, loss = build_inner(model_name, finetune)
    if variant == PLAIN:
        model = inner
    elif variant == DEFAULT:
        model = keras_flat.FlatMinimaModel(inner, seed=0)
    else:
        model = keras_flat.FlatMinimaModel(inner, variant, seed=0)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=jit)
    return model


def measure(model_name, variant, jit, steps, finetune="head"):
    """Seconds of the first two epochs of `fit` for one variant, in this process.

    Returns:
        A dict: `first` (from the call of `fit` to the end of epoch 1),
        `second` (epoch 2), `first_step` (from the call of `fit` to the end
        of the first step) in wall seconds, and `cpu_first`, `cpu_second`
        in process CPU seconds.
    """
    import keras

    model = build(model_name, variant, jit, finetune)
    x, y = _data(model_name, steps)
    marks = {}

    class Marks(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if "first_step" not in marks:
                marks["first_step"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            marks[epoch] = (time.perf_counter(), time.process_time())

    start, cpu_start = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=BATCH_SIZE[model_name], epochs=2, shuffle=False, verbose=0,
              callbacks=[Marks()])
    (end0, cpu0), (end1, cpu1) = marks[0], marks[1]
    return {"first": end0 - start, "second": end1 - end0,
            "first_step": marks["first_step"] - start,
            "cpu_first": cpu0 - cpu_start, "cpu_second": cpu1 - cpu0}


def _worker(argv):
    model_name, variant, jit, steps, finetune = argv
    result = measure(model_name, variant, jit == "on", int(steps), finetune)
    print("RESULT " + json.dumps(result), flush=True)


# --- The driver ---------------------------------------------------------------------


def run_subprocess(model_name, variant, jit, steps, finetune, timeout=1800):
    """`measure` in a fresh Python process; returns its dict, or raises RuntimeError."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "benchmarks.first_epoch", "--worker", model_name,
               variant, "on" if jit else "off", str(steps), finetune]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(tail[:200])
    return json.loads(lines[-1][len("RESULT "):])


def run_in_process(model_name, variant, jit, steps, finetune):
    """`measure` in this process (tracing caches carry over: for smoke tests only)."""
    import keras

    keras.backend.clear_session()
    return measure(model_name, variant, jit, steps, finetune)


def schedule(variants, rounds, plain_every):
    """The order of runs: per round, the variants rotated, bracketed by plain runs."""
    out = []
    for r in range(rounds):
        k = r % len(variants) if variants else 0
        order = variants[k:] + variants[:k]
        sequence = [PLAIN]
        for i, v in enumerate(order):
            sequence.append(v)
            if (i + 1) % plain_every == 0 or i + 1 == len(order):
                sequence.append(PLAIN)
        out.append(sequence)
    return out


def bracketed_ratios(sequence, results, field):
    """`{variant: ratio}` of one round: each run over the mean of the plain runs around it."""
    ratios = {}
    for i, v in enumerate(sequence):
        if v == PLAIN or results[i] is None:
            continue
        around = [results[j][field] for j in (_nearest(sequence, results, i, -1),
                                              _nearest(sequence, results, i, 1))
                  if j is not None]
        if around:
            ratios[v] = results[i][field] / statistics.mean(around)
    return ratios


def _nearest(sequence, results, i, step):
    j = i + step
    while 0 <= j < len(sequence):
        if sequence[j] == PLAIN and results[j] is not None:
            return j
        j += step
    return None


def run(model_name, jit, variants, repeats, steps, plain_every, finetune, runner, log):
    """Rows of the table for one model and `jit_compile` setting."""
    samples = {v: {f: [] for f in FIELDS} for v in [PLAIN] + variants}
    ratios = {v: {f: [] for f in ("first", "second", "cpu_first")} for v in variants}
    failed = {}
    for sequence in schedule(variants, repeats, plain_every):
        results = []
        for v in sequence:
            if v in failed:
                results.append(None)
                continue
            try:
                result = runner(model_name, v, jit, steps, finetune)
            except Exception as error:  # noqa: BLE001 - reported in the table
                failed[v] = f"{type(error).__name__}: {str(error).splitlines()[0][:100]}"
                results.append(None)
                log(f"  {model_name} jit={jit} {v}: FAILED {failed[v]}")
                continue
            results.append(result)
            for f in FIELDS:
                samples[v][f].append(result[f])
            log(f"  {model_name} jit={jit} {v}: first {result['first']:.2f} s, "
                f"second {result['second']:.2f} s")
        for f in ("first", "second", "cpu_first"):
            for v, ratio in bracketed_ratios(sequence, results, f).items():
                ratios[v][f].append(ratio)
    rows = []
    for v in [PLAIN] + variants:
        if v in failed:
            rows.append({"model": model_name, "jit": jit, "variant": f"{v}: fails ({failed[v]})"})
            continue
        if not samples[v]["first"]:
            continue
        row = {"model": model_name, "jit": jit, "variant": v}
        for f, column in (("first", "first x"), ("second", "second x"),
                          ("cpu_first", "first CPU x")):
            row[column] = 1.0 if v == PLAIN else (
                statistics.median(ratios[v][f]) if ratios[v][f] else "")
        for f, column in (("first", "first s"), ("second", "second s"),
                          ("first_step", "first step s")):
            row[column] = statistics.median(samples[v][f])
        rows.append(row)
    return rows


COLUMNS = ["model", "jit", "variant", "first x", "second x", "first s", "second s",
           "first step s", "first CPU x"]


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--worker":
        return _worker(argv[1:])
    import keras_flat
    from benchmarks import common

    rules = [DEFAULT] + list(keras_flat.algorithms.names())
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--rules", nargs="+", default=rules, choices=rules,
                        help=f"variants besides plain Keras ('{DEFAULT}': FlatMinimaModel(inner))")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--jit", choices=("both", "on", "off"), default="both",
                        help="jit_compile setting(s) to measure")
    parser.add_argument("--steps", type=int, default=32, help="steps per epoch")
    parser.add_argument("--plain-every", type=int, default=3,
                        help="a plain run after every this many variants")
    parser.add_argument("--finetune", choices=("head", "all"), default="head",
                        help="mobilenet: train the top only, or every layer")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: digits, SA, jit off, one round of 4 steps")
    parser.add_argument("--in-process", action="store_true",
                        help="run every measurement in this process (tests only: tracing "
                             "caches carry over, so the numbers mean little)")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.rules, args.jit, args.repeats, args.steps = (
            ["digits"], ["sa"], "off", 1, 4)
    jits = {"both": [False, True], "on": [True], "off": [False]}[args.jit]
    runner = run_in_process if args.in_process else run_subprocess

    def log(message):
        print(message, file=sys.stderr, flush=True)

    print(f"Machine: {common.machine()}")
    load_before = os.getloadavg()
    rows = []
    for model_name in args.models:
        for jit in jits:
            rows += run(model_name, jit, list(args.rules), args.repeats, args.steps,
                        args.plain_every, args.finetune, runner, log)
    load_after = os.getloadavg()
    print(f"Load average (1, 5, 15 min): {_load(load_before)} at the start, "
          f"{_load(load_after)} at the end.")
    finetune = f", mobilenet fine-tune: {args.finetune}" if "mobilenet" in args.models else ""
    common.print_table(
        f"First-epoch time, {args.steps} steps per epoch (median of {args.repeats} "
        f"interleaved rounds, each run in a fresh process{finetune})",
        rows, COLUMNS)
    over = [f"{r['model']} jit={r['jit']} {r['variant']} ({r['first x']:.2f}x)" for r in rows
            if isinstance(r.get("first x"), float) and r["first x"] > 2.0]
    print(f"\nFirst epoch over 2x plain's: {', '.join(over) if over else 'none'}.")
    return rows


def _load(values):
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
