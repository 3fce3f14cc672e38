"""Cost of the package's random draws against TensorFlow's own, in gradients.

For each model, in one run and interleaved: one gradient of the model at batch
128 (the unit), the package's draws over the model's trainable variables
(`vector.sphere_like`, RS's direction; `vector.normal_like`;
`vector.rademacher_like`, Hutchinson's probes and SA's jitter) and, for the
same sizes, TensorFlow's stateless generators (`tf.random.stateless_normal`,
`tf.random.stateless_uniform` of random bits, and random signs from
`stateless_uniform` integers), each in its own compiled `tf.function`.
Prints median seconds and the ratio to the gradient.

Usage:
    python -m benchmarks.draws [--models mlp-wide cnn] [--repeats 21] [--jit]
"""

import argparse
import time

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import common
from keras_flat.utils import vector  # noqa: E402

SEED = tf.constant([3, 7], tf.int64)


def _runners(kind, jit):
    model = common.MODELS[kind]()
    x, y = common.data(kind, 1)
    x, y = tf.constant(x), tf.constant(y)
    variables = model.trainable_variables
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def gradient(seed):
        del seed
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, variables)

    def tf_signs(v, seed):
        ints = tf.random.stateless_uniform(v.shape, seed, 0, 2, dtype=tf.int32)
        return tf.cast(2 * ints - 1, tf.float32)

    draws = {
        "gradient (the unit)": gradient,
        "keras-flat sphere_like (RS)": lambda s: vector.sphere_like(variables, s),
        "keras-flat normal_like": lambda s: vector.normal_like(variables, s),
        "keras-flat rademacher_like (probes)": lambda s: vector.rademacher_like(variables, s),
        "tf stateless_normal": lambda s: [tf.random.stateless_normal(v.shape, s)
                                          for v in variables],
        "tf stateless_uniform bits": lambda s: [
            tf.random.stateless_uniform(v.shape, s, None, None, dtype=tf.uint32)
            for v in variables],
        "tf stateless signs": lambda s: [tf_signs(v, s) for v in variables],
    }
    runners = {}
    for name, fn in draws.items():
        compiled = tf.function(fn, jit_compile=jit)
        compiled(SEED)  # Trace (and compile).

        def run(compiled=compiled):
            start = time.perf_counter()
            for t in compiled(SEED):
                t.numpy()
            return time.perf_counter() - start

        runners[name] = run
    size = sum(int(v.shape.num_elements()) for v in variables)
    return runners, size


def run(kinds, repeats, jit=False):
    rows = []
    for kind in kinds:
        runners, size = _runners(kind, jit)
        medians = common.interleaved_medians(runners, repeats)
        unit = medians["gradient (the unit)"]
        for name, seconds in medians.items():
            rows.append({"model": f"{kind} ({size:,} parameters)", "draw": name,
                         "ms": 1000 * seconds, "gradients": seconds / unit})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["mlp-wide", "cnn"],
                        choices=sorted(common.MODELS))
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--jit", action="store_true", help="compile with jit_compile=True")
    args = parser.parse_args(argv)
    print(f"Machine: {common.machine()}")
    rows = run(args.models, args.repeats, args.jit)
    common.print_table(
        f"Random draws over a model's weights, jit_compile={args.jit} "
        f"(median of {args.repeats}; gradient at batch 128 = 1)",
        rows, ["model", "draw", "ms", "gradients"])
    return rows


if __name__ == "__main__":
    main()
