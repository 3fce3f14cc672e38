"""Cost of a 2D loss-landscape surface against forward passes and a hand-written loop.

On the demo's MLP (`keras_flat.app.demo.build_mlp`: 64-64-10, tanh, 4,810
parameters; squared loss on one-hot digits) over 512 training examples of
scikit-learn's digits, measures in one run, interleaved, median over repeats:

- `landscape.surface_2d` on a 21 x 21 grid (441 points) with an `Evaluator`
  built once (the surface is one compiled call, traced once);
- 441 forward passes: a `tf.function` of `model(x, training=False)` called
  441 times (the floor: one forward pass per point), the same with the
  loss, and 441 forward passes inside one `tf.function` (a while loop, as
  the surface runs them: the floor without Python's per-call overhead);
- what users write by hand: for each grid point, `model.set_weights(...)`
  and `model.evaluate(...)` (timed on `--loop-points` points and scaled to
  441), and the faster `set_weights` + `model.test_on_batch(...)` loop.

Aims: the surface costs at most 1.2x the 441 forward passes (either kind),
and the hand-written loops at least 5x the surface.

Usage:
    python -m benchmarks.landscape [--repeats 7] [--loop-points 63]
"""

import argparse
import time

import numpy as np
import tensorflow as tf

from benchmarks import common
from keras_flat import landscape
from keras_flat.app import datasets
from keras_flat.app import demo

RESOLUTION = 21
EXAMPLES = 512


def setup():
    data = datasets.load("digits")
    model = demo.build_mlp(data.input_shape, data.num_classes, hidden=64, seed=0)
    model.compile(loss="mse")
    x = data.x_train[:EXAMPLES]
    y = np.eye(data.num_classes, dtype="float32")[data.y_train[:EXAMPLES]]
    return model, x, y


def _timed(fn):
    def run():
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    return run


def run(repeats, loop_points):
    model, x, y = setup()
    directions = landscape.random_directions(model, num_directions=2, seed=0)
    points = RESOLUTION * RESOLUTION

    start = time.perf_counter()
    evaluator = landscape.Evaluator(model, (x, y))
    first = landscape.surface_2d(evaluator, None, directions, resolution=RESOLUTION)
    first_call = time.perf_counter() - start

    forward = tf.function(lambda x: model(x, training=False))
    forward_loss = tf.function(
        lambda x, y: model.compute_loss(x=x, y=y, y_pred=model(x, training=False)))
    x_tensor, y_tensor = tf.constant(x), tf.constant(y)
    forward(x_tensor)
    forward_loss(x_tensor, y_tensor)

    @tf.function
    def forwards_in_graph(x):
        # Independent iterations, as the surface's: each writes its own output.
        def body(i, out):
            return i + 1, out.write(i, tf.reduce_sum(model(x, training=False)))
        out = tf.TensorArray(tf.float32, size=points)
        return tf.while_loop(lambda i, _: i < points, body, (0, out))[1].stack()

    forwards_in_graph(x_tensor)

    def forwards():
        for _ in range(points):
            out = forward(x_tensor)
        out.numpy()

    def forwards_with_loss():
        for _ in range(points):
            out = forward_loss(x_tensor, y_tensor)
        out.numpy()

    origin = model.get_weights()
    grid = np.linspace(-1.0, 1.0, RESOLUTION)
    pairs = [(a, b) for b in grid for a in grid]
    chosen = [pairs[i] for i in np.linspace(0, points - 1, loop_points).astype(int)]
    d1, d2 = directions.unflatten(0), directions.unflatten(1)
    hand_losses = []

    def hand_loop():
        hand_losses.clear()
        for a, b in chosen:
            model.set_weights([w + a * u + b * v for w, u, v in zip(origin, d1, d2)])
            hand_losses.append(model.evaluate(x, y, batch_size=EXAMPLES, verbose=0))
        model.set_weights(origin)

    def batch_loop():
        for a, b in pairs:
            model.set_weights([w + a * u + b * v for w, u, v in zip(origin, d1, d2)])
            model.test_on_batch(x, y)
        model.set_weights(origin)

    hand_loop()  # Builds Keras's test function.
    runners = {
        "surface_2d, 21x21 (one compiled call)": _timed(
            lambda: landscape.surface_2d(evaluator, None, directions, resolution=RESOLUTION)),
        "441 forward passes (tf.function of model(x))": _timed(forwards),
        "441 forward passes with the loss": _timed(forwards_with_loss),
        "441 forward passes in one tf.function (while loop)": _timed(
            lambda: forwards_in_graph(x_tensor).numpy()),
        "set_weights + test_on_batch loop": _timed(batch_loop),
        f"set_weights + evaluate loop ({loop_points} points, scaled to 441)": _timed(hand_loop),
    }
    medians = common.interleaved_medians(runners, repeats)
    loop_name = list(runners)[-1]
    medians[loop_name] *= points / loop_points
    surface_name = list(runners)[0]
    floor = medians["441 forward passes (tf.function of model(x))"]
    in_graph = medians["441 forward passes in one tf.function (while loop)"]
    surface = medians[surface_name]
    medians["surface_2d first call (builds and traces)"] = first_call
    rows = []
    for name, seconds in medians.items():
        rows.append({"measurement": name, "ms": 1000 * seconds,
                     "/ forward passes (Python calls)": seconds / floor,
                     "/ forward passes (one tf.function)": seconds / in_graph,
                     "/ surface_2d": seconds / surface})
    # The hand loop and the surface agree on the loss at the chosen points.
    index = {p: i for i, p in enumerate(pairs)}
    flat_loss = first.loss.ravel()
    error = max(abs(flat_loss[index[p]] - h) / max(abs(h), 1e-12)
                for p, h in zip(chosen, hand_losses))
    traces = evaluator.tracing_count()
    return rows, traces, repeats + 2, error


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--loop-points", type=int, default=63,
                        help="grid points the set_weights + evaluate loop is timed on")
    args = parser.parse_args(argv)
    print(f"Machine: {common.machine()}")
    rows, traces, calls, error = run(args.repeats, max(1, min(args.loop_points, 441)))
    common.print_table(
        f"Loss surface of the demo's MLP (4,810 parameters) on {EXAMPLES} digits, "
        f"21 x 21 points (median of {args.repeats})", rows,
        ["measurement", "ms", "/ forward passes (Python calls)",
         "/ forward passes (one tf.function)", "/ surface_2d"])
    print(f"\nThe surface's function was traced {traces} time(s) over {calls} surfaces; its "
          f"losses equal the hand-written loop's to a relative {error:.1e}.")
    return rows


if __name__ == "__main__":
    main()
