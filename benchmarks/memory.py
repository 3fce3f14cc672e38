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

Peak RSS counts more than tensors: tracing the training function and the
first run's graph optimisation and kernels also take memory, once per
traced function, and a rule whose graph has many operations pays for them
there (e.g. a random draw whose seeds take hundreds of scalar operations
per chunk). A second table splits that off: the peak bytes of TensorFlow's
CPU allocator during `fit` over those in use before it
(`tf.config.experimental.get_memory_info`, available on CPU with oneDNN,
TensorFlow's default on x86), i.e. tensors alone, again minus plain `fit`'s.
The first figure minus the second is, to fragmentation, memory that is not
tensors.

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


def _allocator_bytes():
    """(current, peak) bytes of TensorFlow's CPU allocator, or None where it keeps no statistics."""
    import tensorflow as tf

    try:
        info = tf.config.experimental.get_memory_info("CPU:0")
    except (ValueError, RuntimeError):
        return None
    return info["current"], info["peak"]


def _reset_allocator_peak():
    import tensorflow as tf

    try:
        tf.config.experimental.reset_memory_stats("CPU:0")
    except (ValueError, RuntimeError):
        pass


def child(variant, optimizer, steps):
    """Trains one variant in this process and prints its figures as JSON."""
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
    _reset_allocator_peak()
    allocated = _allocator_bytes()
    before = _current_rss()
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    peak = _peak_rss()
    after = _allocator_bytes()
    buffer = 4 * parameters()
    tensors = None
    if allocated is not None and after is not None:
        tensors = (after[1] - allocated[0]) / buffer
    print(json.dumps({"buffers": (peak - before) / buffer, "tensor_buffers": tensors,
                      "peak_mib": peak / 2**20, "before_mib": before / 2**20}))


def measure(variant, optimizer, steps):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    command = [sys.executable, "-m", "benchmarks.memory", "--child", variant, optimizer,
               "--steps", str(steps)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(optimizers, repeats, steps, variants=None, key="buffers"):
    """Returns {optimizer: {variant: extra buffers over plain keras}} (medians).

    `key="buffers"` gives the peak-RSS figures; with `key="both"`, a pair of
    tables `(rss, tensors)`, the second from the allocator (None entries
    where it keeps no statistics).
    """
    variants = list(variants or VARIANTS)
    if "plain keras" not in variants:
        variants.insert(0, "plain keras")
    figures = {(o, v): [] for o in optimizers for v in variants}
    for _ in range(repeats):  # Interleaved, so slow drifts hit every variant alike.
        for optimizer in optimizers:
            for variant in variants:
                figure = measure(variant, optimizer, steps)
                figures[(optimizer, variant)].append(figure)
                tensors = figure.get("tensor_buffers")
                print(f"  {optimizer:4s} {variant:28s} {figure['buffers']:.3f}"
                      + ("" if tensors is None else f"  (tensors {tensors:.3f})"),
                      file=sys.stderr, flush=True)
    tables = {}
    for name in ("buffers", "tensor_buffers"):
        table = tables[name] = {}
        for optimizer in optimizers:
            values = {v: [f.get(name) for f in figures[(optimizer, v)]] for v in variants}
            medians = {v: None if None in x else statistics.median(x) for v, x in values.items()}
            plain = medians["plain keras"]
            table[optimizer] = {
                v: None if plain is None or m is None else m - plain
                for v, m in medians.items() if v != "plain keras"
            }
            table[optimizer]["plain keras (absolute)"] = plain
    if key == "both":
        return tables["buffers"], tables["tensor_buffers"]
    return tables[key]


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
    table, tensors = run(args.optimizers, args.repeats, args.steps, args.variants, key="both")
    variants = [v for v in next(iter(table.values())) if v != "plain keras (absolute)"]
    setting = (f"({parameters() / 1e6:.1f}M-parameter MLP, batch {BATCH}, {EPOCHS} epochs of "
               f"{args.steps} steps, median of {args.repeats} processes)")
    rows = [{"optimizer": o, **{v: table[o][v] for v in variants},
             "plain fit itself": table[o]["plain keras (absolute)"]} for o in table]
    common.print_table(f"Extra peak memory over plain Keras fit, in weight-sized buffers "
                       f"{setting}", rows, ["optimizer", *variants, "plain fit itself"])
    if any(tensors[o]["plain keras (absolute)"] is not None for o in tensors):
        rows = [{"optimizer": o, **{v: tensors[o][v] for v in variants},
                 "plain fit itself": tensors[o]["plain keras (absolute)"]} for o in tensors]
        common.print_table(f"Of which tensors: extra peak bytes of TensorFlow's CPU allocator "
                           f"over plain Keras fit, in weight-sized buffers {setting}",
                           rows, ["optimizer", *variants, "plain fit itself"])
    return table


if __name__ == "__main__":
    main()
