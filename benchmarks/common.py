"""Models, data and timing shared by the benchmark scripts."""

import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def mlp(inputs=20, width=256, classes=10, api=keras):
    """The MLP of the feasibility notes: 20-256-256-10, 73.7k parameters.

    `api` is the Keras module that builds it: `keras` (Keras 3), or
    `tf_keras` for the same model in Keras 2 (benchmarks/peers.py).
    """
    return api.Sequential([
        api.Input((inputs,)),
        api.layers.Dense(width, activation="relu"),
        api.layers.Dense(width, activation="relu"),
        api.layers.Dense(classes),
    ])


def cnn(size=32, channels=3, classes=10, width=32, batchnorm=True, api=keras):
    """A small CNN: four 3x3 convolutions with BatchNorm, ~67k parameters.

    `api` as for `mlp`.
    """
    layers = [api.Input((size, size, channels))]
    for i, filters in enumerate((width, width, 2 * width, 2 * width)):
        layers += [
            api.layers.Conv2D(filters, 3, padding="same", use_bias=not batchnorm),
            api.layers.BatchNormalization() if batchnorm else api.layers.Identity(),
            api.layers.ReLU(),
        ]
        if i % 2 == 1:
            layers.append(api.layers.MaxPooling2D())
    layers += [api.layers.GlobalAveragePooling2D(), api.layers.Dense(classes)]
    return api.Sequential(layers)


VOCAB, SEQUENCE = 1000, 32


def transformer(dim=64, heads=4, hidden=128, classes=10, vocab=VOCAB, sequence=SEQUENCE):
    """A transformer encoder block on 32 tokens: ~100k parameters.

    Token and position embeddings, 4-head self-attention and a GELU MLP,
    each with a residual connection, Dropout and LayerNorm, then average
    pooling and a classifier. `vocab` and `sequence` size the embeddings
    (by default 1,000 tokens and sequences of 32).
    """
    tokens = keras.Input((sequence,), dtype="int32")
    positions = tokens * 0 + keras.ops.arange(sequence, dtype="int32")
    h = keras.layers.Embedding(vocab, dim)(tokens) + keras.layers.Embedding(sequence, dim)(
        positions)
    attention = keras.layers.MultiHeadAttention(heads, dim // heads)(h, h)
    h = keras.layers.LayerNormalization()(h + keras.layers.Dropout(0.1)(attention))
    mlp_out = keras.layers.Dense(hidden, activation="gelu")(h)
    mlp_out = keras.layers.Dense(dim)(mlp_out)
    h = keras.layers.LayerNormalization()(h + keras.layers.Dropout(0.1)(mlp_out))
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(tokens, keras.layers.Dense(classes)(h))


def lstm(dim=32, units=64, classes=10):
    """A text classifier: embedding, one LSTM over 32 tokens, Dense: ~57k parameters."""
    return keras.Sequential([
        keras.Input((SEQUENCE,), dtype="int32"),
        keras.layers.Embedding(VOCAB, dim),
        keras.layers.LSTM(units),
        keras.layers.Dense(classes),
    ])


MODELS = {"mlp": mlp, "mlp-wide": lambda **kw: mlp(inputs=784, width=512, **kw),
          "cnn": cnn, "cnn-nobn": lambda **kw: cnn(batchnorm=False, **kw),
          "transformer": transformer, "lstm": lstm}
TOKEN_MODELS = ("transformer", "lstm")


def data(kind, batches, batch_size=128, seed=0):
    """Random inputs and integer labels for `batches` batches."""
    rng = np.random.default_rng(seed)
    n = batches * batch_size
    if kind in TOKEN_MODELS:
        return rng.integers(0, VOCAB, (n, SEQUENCE)).astype("int32"), rng.integers(0, 10, n)
    flat = {"mlp": 20, "mlp-wide": 784}
    shape = (n, flat[kind]) if kind in flat else (n, 32, 32, 3)  # Both CNNs take images.
    return rng.normal(size=shape).astype("float32"), rng.integers(0, 10, n)


def time_fit(model, x, y, batch_size=128):
    """Seconds per step of one `fit` epoch (the model must be warmed up)."""
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return (time.perf_counter() - start) / (len(x) // batch_size)


def time_loop(model, x, y, batch_size=128):
    """Seconds per step of a `train_on_batch` loop over the same batches.

    Unlike `fit`, whose throughput on small CPU machines flips between a
    two-core and a one-core rate from one epoch to the next, this loop runs
    steadily at the two-core rate, so its ratios are the less noisy ones.
    """
    steps = len(x) // batch_size
    start = time.perf_counter()
    for i in range(steps):
        sl = slice(i * batch_size, (i + 1) * batch_size)
        model.train_on_batch(x[sl], y[sl])
    return (time.perf_counter() - start) / steps


def timed(fn, per=lambda out: 1):
    """A runner: seconds of `fn()` (its tensors fetched) divided by `per(output)`."""
    def run():
        start = time.perf_counter()
        out = fn()
        for t in tf.nest.flatten(out):
            if hasattr(t, "numpy"):
                t.numpy()
        return (time.perf_counter() - start) / per(out)
    return run


def interleaved_medians(runners, repeats):
    """Runs every runner once per round, rotating the order; returns medians.

    Args:
        runners: dict name -> zero-argument callable returning seconds.
        repeats: number of rounds.
    """
    names = list(runners)
    samples = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            samples[name].append(runners[name]())
    return {name: statistics.median(values) for name, values in samples.items()}


def machine():
    """One line describing where the benchmark ran."""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}, devices "
        f"{[d.device_type for d in tf.config.list_physical_devices()]}"
    )


def print_table(title, rows, columns):
    """Prints rows (list of dicts) as a Markdown table."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        print("| " + " | ".join(cells) + " |")
