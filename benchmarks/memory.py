"""Peak memory of each algorithm over plain Keras `fit`, in weight-sized buffers.

Trains a 16.8M-parameter MLP (2048-4096-2048-10, float32: one weight-sized
buffer is 64 MiB) for 3 epochs at batch 64 on random data, once per variant,
each variant in its own fresh process. The figure of a run is

    (peak RSS during fit - RSS just before fit) / (one weight-sized buffer),

with the peak from `resource.getrusage` and the RSS before `fit` from
`/proc/self/statm`; the table prints each variant's figure minus the same
figure for plain `keras.Model.fit` with the same optimizer, i.e. the extra
weight-sized buffers the variant keeps alive at its peak. Optimizer slots
(momentum, Adam's moments) and the gradient are in both, so they cancel.

Variants: `FlatMinimaModel` with `algorithm=None` (the wrapper alone), SAM,
ASAM, RS, SA, GSAM, LookSAM and RWP, all with the default
`on_nonfinite="skip"`, and the wrapper and SAM with `on_nonfinite="ignore"`;
optimizers SGD with momentum 0.9 and Adam. Targets: at most 2 extra buffers
for every algorithm, at most 0.25 for the wrapper. LookSAM keeps one more
buffer by design (the direction it reuses between SAM steps).
The run-to-run noise of one figure is about a tenth of a buffer; `--repeats`
runs every process several times and reports the median.

Usage:
    python -m benchmarks.memory [--repeats 3] [--steps 10] [--optimizers sgd adam]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

LAYERS = (2048, 4096, 2048, 10)
BATCH = 64
EPOCHS = 3
VARIANTS = {
    "plain keras": None,
    "none (wrapper)": ("none", "skip"),
    "none, on_nonfinite='ignore'": ("none", "ignore"),
    "sam": ("sam", "skip"),
    "sam, on_nonfinite='ignore'": ("sam", "ignore"),
    "asam": ("asam", "skip"),
    "rs": ("rs", "skip"),
    "sa": ("sa", "skip"),
    "gsam": ("gsam", "skip"),
    "looksam": ("looksam", "skip"),
    "rwp": ("rwp", "skip"),
}
OPTIMIZERS = ("sgd", "adam")


def parameters():
    return sum(a * b + b for a, b in zip(LAYERS[:-1], LAYERS[1:]))


def _current_rss():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux.


def child(variant, optimizer, steps):
    """Trains one variant in this process and prints its figure as JSON."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    import keras_flat

    keras.utils.set_random_seed(0)
    inner = keras.Sequential(
        [keras.Input((LAYERS[0],))]
        + [keras.layers.Dense(n, activation="relu") for n in LAYERS[1:-1]]
        + [keras.layers.Dense(LAYERS[-1])]
    )
    spec = VARIANTS[variant]
    if spec is None:
        model = inner
    else:
        name, on_nonfinite = spec
        algorithm = {
            "none": lambda: None,
            "sam": lambda: keras_flat.algorithms.SAM(rho=0.05),
            "asam": lambda: keras_flat.algorithms.ASAM(rho=0.5),
            "rs": lambda: keras_flat.algorithms.RandomSmoothing(rho=0.1),
            "sa": lambda: keras_flat.algorithms.SharpnessAware(rho=0.05),
            "gsam": lambda: keras_flat.algorithms.GSAM(rho=0.05),
            "looksam": lambda: keras_flat.algorithms.LookSAM(rho=0.05, interval=5),
            "rwp": lambda: keras_flat.algorithms.RWP(sigma=0.01),
        }[name]()
        model = keras_flat.FlatMinimaModel(inner, algorithm, seed=0,
                                           on_nonfinite=on_nonfinite)
    opt = (keras.optimizers.SGD(0.01, momentum=0.9) if optimizer == "sgd"
           else keras.optimizers.Adam(1e-4))
    model.compile(optimizer=opt,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * BATCH, LAYERS[0])).astype("float32")
    y = rng.integers(0, LAYERS[-1], steps * BATCH)
    before = _current_rss()
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    peak = _peak_rss()
    buffer = 4 * parameters()
    print(json.dumps({"buffers": (peak - before) / buffer, "peak_mib": peak / 2**20,
                      "before_mib": before / 2**20}))


def measure(variant, optimizer, steps):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    command = [sys.executable, "-m", "benchmarks.memory", "--child", variant, optimizer,
               "--steps", str(steps)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])["buffers"]


def run(optimizers, repeats, steps, variants=None):
    """Returns {optimizer: {variant: extra buffers over plain keras}} (medians)."""
    variants = list(variants or VARIANTS)
    if "plain keras" not in variants:
        variants.insert(0, "plain keras")
    figures = {(o, v): [] for o in optimizers for v in variants}
    for _ in range(repeats):  # Interleaved, so slow drifts hit every variant alike.
        for optimizer in optimizers:
            for variant in variants:
                figures[(optimizer, variant)].append(measure(variant, optimizer, steps))
                print(f"  {optimizer:4s} {variant:28s} {figures[(optimizer, variant)][-1]:.3f}",
                      file=sys.stderr, flush=True)
    table = {}
    for optimizer in optimizers:
        plain = statistics.median(figures[(optimizer, "plain keras")])
        table[optimizer] = {
            v: statistics.median(figures[(optimizer, v)]) - plain
            for v in variants if v != "plain keras"
        }
        table[optimizer]["plain keras (absolute)"] = plain
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "OPTIMIZER"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3, help="processes per variant")
    parser.add_argument("--steps", type=int, default=10, help="steps of batch 64 per epoch")
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, steps=args.steps)
        return None
    from benchmarks import common

    print(f"Machine: {common.machine()}")
    table = run(args.optimizers, args.repeats, args.steps, args.variants)
    variants = [v for v in next(iter(table.values())) if v != "plain keras (absolute)"]
    rows = [{"optimizer": o, **{v: table[o][v] for v in variants},
             "plain fit itself": table[o]["plain keras (absolute)"]} for o in table]
    common.print_table(
        f"Extra peak memory over plain Keras fit, in weight-sized buffers "
        f"({parameters() / 1e6:.1f}M-parameter MLP, batch {BATCH}, {EPOCHS} epochs of "
        f"{args.steps} steps, median of {args.repeats} processes)",
        rows, ["optimizer", *variants, "plain fit itself"])
    return table


if __name__ == "__main__":
    main()
