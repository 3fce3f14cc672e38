"""Step time and communication of each algorithm under tf.distribute.

For one and two logical CPU devices (OneDeviceStrategy and MirroredStrategy
in one process), builds the same MLP with each algorithm in "global" and
"replica" perturbation sync, and prints (1) the elements all-reduced per
step, counted in the traced step graph, as "extra gradient all-reduces"
relative to plain Keras training under the same strategy, and (2) the
median step time ratio to plain Keras training under the same strategy,
from interleaved `fit` epochs.

Expected: at most one extra gradient-sized all-reduce in "global" mode and
none in "replica" mode (a few scalars for the non-finite check and SA's
batch-size gather are listed separately).

Usage:
    python -m benchmarks.distributed [--repeats 5] [--steps 40]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

# Logical devices must exist before TensorFlow initialises its devices.
_CPUS = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _CPUS[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_flat  # noqa: E402
from benchmarks import common  # noqa: E402

ALGORITHMS = {
    "none": lambda sync: keras_flat.algorithms.NoPerturbation(perturbation_sync=sync),
    "rs": lambda sync: keras_flat.algorithms.RandomSmoothing(0.1, perturbation_sync=sync),
    "sa": lambda sync: keras_flat.algorithms.SharpnessAware(0.05, perturbation_sync=sync),
    "sam": lambda sync: keras_flat.algorithms.SAM(0.05, perturbation_sync=sync),
    "asam": lambda sync: keras_flat.algorithms.ASAM(0.5, perturbation_sync=sync),
}
_COLLECTIVES = ("CollectiveReduce", "CollectiveGather", "NcclAllReduce", "AllReduce")


def build(strategy, name, sync):
    with strategy.scope():
        inner = common.mlp()
        model = inner if name == "plain keras" else keras_flat.FlatMinimaModel(
            inner, ALGORITHMS[name](sync), seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def communication(strategy, model, x, y):
    """(gradient-sized elements, other elements) all-reduced/gathered per replica step."""
    dataset = tf.data.Dataset.from_tensor_slices((x[:128], y[:128])).batch(128)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    step = tf.function(lambda data: strategy.run(model.train_step, args=(data,)))
    graph = step.get_concrete_function(batch).graph
    sizes = []

    def walk(g):
        for op in g.get_operations():
            if any(op.type.startswith(c) for c in _COLLECTIVES):
                shape = op.inputs[0].shape
                sizes.append(shape.num_elements() or 0)
        for function in getattr(g, "_functions", {}).values():
            if hasattr(function, "graph"):
                walk(function.graph)

    walk(graph)
    replicas = strategy.num_replicas_in_sync
    total = sum(sizes) / replicas
    small = sum(s for s in sizes if s < 1000) / replicas
    return total - small, small, len(sizes) / replicas


def run(repeats, steps):
    x, y = common.data("mlp", steps)
    d = sum(int(np.prod(v.shape)) for v in common.mlp().trainable_variables)
    strategies = {
        "1 device": tf.distribute.OneDeviceStrategy("/cpu:0"),
        "2 devices": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
    }
    rows = []
    for label, strategy in strategies.items():
        variants = {"plain keras": ("plain keras", None)}
        for name in ALGORITHMS:
            for sync in ("global", "replica"):
                variants[f"{name} ({sync})"] = (name, sync)
        models = {v: build(strategy, *spec) for v, spec in variants.items()}
        for m in models.values():  # Builds the optimizers and traces fit.
            common.time_fit(m, x[:256], y[:256])
        comm = {v: communication(strategy, m, x, y) if label != "1 device" else (0, 0, 0)
                for v, m in models.items()}
        medians = common.interleaved_medians(
            {v: (lambda m=m: common.time_fit(m, x, y)) for v, m in models.items()}, repeats)
        base_time, base_comm = medians["plain keras"], comm["plain keras"][0]
        for v in variants:
            big, small, ops = comm[v]
            rows.append({
                "devices": label, "variant": v,
                "extra gradient all-reduces": (big - base_comm) / d,
                "scalar collectives": small, "collective ops": ops,
                "ms/step": 1000 * medians[v], "time ratio": medians[v] / base_time,
            })
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    print(f"Machine: {common.machine()}")
    rows = run(args.repeats, args.steps)
    common.print_table(
        f"MLP 20-256-256-10, global batch 128, median of {args.repeats} fit epochs", rows,
        ["devices", "variant", "extra gradient all-reduces", "scalar collectives",
         "collective ops", "ms/step", "time ratio"])
    return rows


if __name__ == "__main__":
    main()
