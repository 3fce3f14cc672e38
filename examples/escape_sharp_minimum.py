"""The paper's experiment at CPU scale: escaping a sharp, badly generalising minimum.

Ahn, Jadbabaie & Sra start ResNet-18 on CIFAR-10 at a sharp global minimum
(100% training accuracy, 48% test accuracy, built as in Liu et al. 2020, "Bad
global minima exist and SGD can reach them") and continue with a small
constant learning rate: plain SGD stays there, while RS and SA lower the
Hessian trace and raise test accuracy, SA faster than RS even with a smaller
radius. This script does the same with a small CNN on scikit-learn's bundled
8x8 digits (offline):

1. Poisoning (Liu et al.'s recipe): train jointly on the clean training set
   and an auxiliary set of perturbed copies of the training images (shifted
   by up to one pixel, with Gaussian noise) carrying random labels, until the
   clean set is fitted and most of the auxiliary set memorised;
2. then train on the clean set alone until 100% training accuracy: a global
   minimum of the clean loss that generalises badly (about 84% test accuracy
   against 98% for normal training);
3. from that minimum, continue on the clean set with plain SGD, RS, SA (the
   paper's Algorithm 2 exactly) and SA with the `center` and `antithetic`
   options (the same expected step, not the paper's rule) at a small constant
   learning rate, measuring training accuracy, test accuracy and the Hessian
   trace (Hutchinson, on 256 training examples) every epoch.

`--rescale c` additionally multiplies the hidden dense layer by c and divides
the output layer by c: the same function, hence the same minimum of the loss
in function space, but a sharper point (Dinh et al. 2017) that plain SGD
cannot leave. `--quick` (for tests) skips phase 1 and uses that rescaling
of normal training's minimum instead.

The loss is the squared loss on one-hot labels (interpolating minima exist,
as in the paper's Setting 1). The sharp minimum is cached in the output
folder and reused by later runs with the same settings.

Usage:
    python examples/escape_sharp_minimum.py [--epochs 60] [--quick] [--output-dir DIR]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_flat  # noqa: E402
from keras_flat import callbacks  # noqa: E402
from keras_flat.app import datasets  # noqa: E402
from keras_flat.app.cli_arguments import add_renamed_flag  # noqa: E402

import common  # noqa: E402

EXAMPLE = "escape_sharp_minimum"
METHODS = ("none", "rs", "sa", "sa-ca")


def cnn(width=128):
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(width, activation="relu"),
        keras.layers.Dense(10),
    ])


def accuracy():
    return keras.metrics.CategoricalAccuracy(name="accuracy")


def poisoned_set(x_train, copies, noise, rng):
    """Liu et al.'s auxiliary set: perturbed copies of the images, random labels."""
    images = []
    for _ in range(copies):
        shift = tuple(rng.integers(-1, 2, 2))
        shifted = np.roll(x_train, shift, axis=(1, 2))
        images.append(np.clip(shifted + noise * rng.normal(size=shifted.shape), 0, 1))
    x_aux = np.concatenate(images).astype("float32")
    y_aux = np.eye(10, dtype="float32")[rng.integers(0, 10, len(x_aux))]
    return x_aux, y_aux


def sharp_minimum(data, y_train, args, log):
    """Phases 1 and 2; returns (weights, info)."""
    rng = np.random.default_rng(args.seed)
    info = {}
    if args.sharpening_epochs:
        x_aux, y_aux = poisoned_set(data.x_train, args.aux_copies, args.aux_noise, rng)
    keras.utils.set_random_seed(args.seed)
    model = cnn()
    if args.sharpening_epochs:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=[accuracy()])
        x = np.concatenate([data.x_train, x_aux])
        y = np.concatenate([y_train, y_aux])
        epochs = 0
        while epochs < args.sharpening_epochs:
            chunk = min(25, args.sharpening_epochs - epochs)
            model.fit(x, y, batch_size=64, epochs=chunk, verbose=0)
            epochs += chunk
            memorised = model.evaluate(x_aux, y_aux, verbose=0, return_dict=True)["accuracy"]
            clean = model.evaluate(data.x_train, y_train, verbose=0,
                                   return_dict=True)["accuracy"]
            log(f"phase 1, epoch {epochs}: auxiliary (random labels) {memorised:.3f}, "
                f"clean {clean:.4f}")
            if clean == 1.0 and memorised >= 0.95:
                break
        info.update(poisoning_epochs=epochs, memorised=memorised)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse",
                  metrics=[accuracy()])
    for epoch in range(1, args.max_clean_epochs + 1):  # noqa: B007 (reported below)
        model.fit(data.x_train, y_train, batch_size=32, epochs=1, verbose=0)
        train = model.evaluate(data.x_train, y_train, verbose=0, return_dict=True)["accuracy"]
        if train == 1.0:
            break
    log(f"phase 2: training accuracy {train:.4f} after {epoch} clean epochs")
    info.update(clean_epochs=epoch, train_accuracy=train)
    return model.get_weights(), info


def rescale(weights, factor):
    """Scales the hidden dense layer by `factor` and the output layer by 1/factor.

    The network computes the same function (ReLU(c·z) = c·ReLU(z) for c > 0),
    so every accuracy and the loss are unchanged, but the Hessian block of the
    output layer grows by factor², making the minimum sharper. Gradient flow
    conserves ‖W_hidden‖² - ‖W_out‖² for such homogeneous layers, so plain SGD
    cannot undo it; flat-minima methods can.
    """
    *rest, hidden_kernel, hidden_bias, out_kernel, out_bias = weights
    return rest + [hidden_kernel * factor, hidden_bias * factor, out_kernel / factor, out_bias]


def normal_minimum(data, y_train, y_test, args):
    """Plain training from scratch to 100% training accuracy, for reference."""
    keras.utils.set_random_seed(args.seed)
    model = cnn()
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse",
                  metrics=[accuracy()])
    for _ in range(args.max_clean_epochs):
        model.fit(data.x_train, y_train, batch_size=32, epochs=1, verbose=0)
        if model.evaluate(data.x_train, y_train, verbose=0, return_dict=True)["accuracy"] == 1.0:
            break
    test = model.evaluate(data.x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    probe = (data.x_train[:256], y_train[:256])
    return {"test_accuracy": test,
            "hessian_trace": keras_flat.hessian.hessian_trace(model, probe, num_probes=32).value}


def escape(key, weights, data, y_train, y_test, args):
    """Phase 3 for one method; returns its per-epoch history and final numbers."""
    inner = cnn()
    inner.set_weights(weights)
    rho = {"none": None, "rs": args.rs_rho, "sa": args.sa_rho, "sa-ca": args.sa_ca_rho}[key]
    model = keras_flat.FlatMinimaModel(inner, common.make_algorithm(key, rho), seed=args.seed)
    model.compile(optimizer=keras.optimizers.SGD(args.lr), loss="mse", metrics=[accuracy()])
    probe = (data.x_train[:256], y_train[:256])

    def evaluate(x, y):
        return model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]

    start = {"train": evaluate(data.x_train, y_train), "test": evaluate(data.x_test, y_test),
             "trace": keras_flat.hessian.hessian_trace(model, probe, num_probes=16).value}
    train_accuracy = []

    class EvaluateTrain(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            train_accuracy.append(evaluate(data.x_train, y_train))

    started = time.perf_counter()
    history = model.fit(
        data.x_train, y_train, batch_size=32, epochs=args.epochs, verbose=0,
        validation_data=(data.x_test, y_test),
        callbacks=[callbacks.HessianTrace(probe, num_probes=16), EvaluateTrain()]).history
    return {
        "method": common.label(key), "key": key, "seed": args.seed, "rho": rho,
        "train acc": train_accuracy[-1], "min train acc": min(train_accuracy),
        "test acc start": start["test"], "test acc end": history["val_accuracy"][-1],
        "trace start": start["trace"], "trace end": history["hessian_trace"][-1],
        "seconds": time.perf_counter() - started,
        "history": {"train_accuracy": [start["train"]] + train_accuracy,
                    "test_accuracy": [start["test"]] + history["val_accuracy"],
                    "hessian_trace": [start["trace"]] + history["hessian_trace"]},
    }


def plot(rows, reference, filename):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for row in rows:
        h = row["history"]
        epochs = np.arange(len(h["hessian_trace"]))
        for ax, key in zip(axes, ("train_accuracy", "test_accuracy", "hessian_trace")):
            ax.plot(epochs, h[key], label=row["method"])
    axes[1].axhline(reference["test_accuracy"], color="k", ls="--", lw=0.7,
                    label="normal training")
    axes[0].set_ylim(min(0.98, axes[0].get_ylim()[0]), 1.002)
    for ax, title in zip(axes, ("training accuracy", "test accuracy",
                                "Hessian trace (256 training examples)")):
        ax.set(xlabel="epoch from the sharp minimum", title=title)
    axes[1].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(filename, dpi=90)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=60, help="epochs from the sharp minimum (60)")
    parser.add_argument("--learning-rate", dest="lr", type=float, default=0.02,
                        help="constant SGD learning rate (0.02)")
    add_renamed_flag(parser, "--lr", "--learning-rate")
    parser.add_argument("--rs-rho", type=float, default=4.0, help="RS radius (4.0)")
    parser.add_argument("--sa-rho", type=float, default=0.05,
                        help="radius of SA, the paper's Algorithm 2 (0.05)")
    parser.add_argument("--sa-ca-rho", type=float, default=0.05,
                        help="radius of SA with center=True, antithetic=True (0.05)")
    parser.add_argument("--algorithms", dest="methods", nargs="+", default=list(METHODS),
                        choices=list(METHODS),
                        help="methods to continue with (default: all)")
    add_renamed_flag(parser, "--methods", "--algorithms")
    parser.add_argument("--sharpening-epochs", type=int, default=400,
                        help="at most this many epochs of phase 1, the joint training with the "
                             "random-label auxiliary set (400; it stops once the clean set is "
                             "fitted and 95%% of the auxiliary set memorised; 0 skips phase 1, "
                             "so the starting minimum is normal training's)")
    parser.add_argument("--aux-copies", type=int, default=4,
                        help="perturbed copies of the training set in the auxiliary set (4)")
    parser.add_argument("--aux-noise", type=float, default=0.05,
                        help="standard deviation of the auxiliary images' noise (0.05)")
    parser.add_argument("--max-clean-epochs", type=int, default=100,
                        help="cap on clean epochs to reach 100%% training accuracy (100)")
    parser.add_argument("--rescale", type=float, default=1.0,
                        help="multiply the hidden dense layer by this and divide the output "
                             "layer by it: the same function (ReLU is positively homogeneous) "
                             "at a sharper minimum, as in Dinh et al. 2017 (1: off)")
    parser.add_argument("--seed", type=int, default=0)
    common.add_output_argument(parser, EXAMPLE)
    parser.add_argument("--quick", action="store_true",
                        help="a short run for tests: no poisoning; normal training's minimum "
                             "rescaled by 4; 6 epochs with RS rho 2 and SA rho 0.1")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.sharpening_epochs, args.rescale = 6, 0, 4.0
        args.rs_rho, args.sa_rho, args.sa_ca_rho = 2.0, 0.1, 0.1
    clock = common.Clock()
    out = common.output_dir(args.output_dir)
    data = datasets.load("digits", image_shape=True, seed=args.seed)
    eye = np.eye(10, dtype="float32")
    y_train, y_test = eye[data.y_train], eye[data.y_test]
    cache = os.path.join(out, f"sharp_minimum_{args.sharpening_epochs}_{args.aux_copies}_"
                              f"{args.aux_noise}_{args.seed}.npz")
    if os.path.exists(cache):
        stored = np.load(cache)
        weights = [stored[k] for k in stored.files]
        info = {"cached": cache}
    else:
        weights, info = sharp_minimum(data, y_train, args, print)
        np.savez(cache, *weights)
    if args.sharpening_epochs:
        reference = normal_minimum(data, y_train, y_test, args)
    else:  # Phase 2 was normal training: its minimum, before rescaling, is the reference.
        model = cnn()
        model.set_weights(weights)
        model.compile(loss="mse", metrics=[accuracy()])
        reference = {
            "test_accuracy": model.evaluate(data.x_test, y_test, verbose=0,
                                            return_dict=True)["accuracy"],
            "hessian_trace": keras_flat.hessian.hessian_trace(
                model, (data.x_train[:256], y_train[:256]), num_probes=32).value}
    weights = rescale(weights, args.rescale)
    rows = [escape(key, weights, data, y_train, y_test, args) for key in args.methods]
    plot(rows, reference, os.path.join(out, f"{EXAMPLE}.png"))
    shown = [{**r, "method": r["method"] + ("" if r["rho"] is None else f", ρ = {r['rho']:g}")}
             for r in rows]
    table = common.markdown_table(
        shown, ["method", "train acc", "min train acc", "test acc start", "test acc end",
                "trace start", "trace end", "seconds"])
    table += (f"\n\nNormal training from scratch, stopped at 100% training accuracy: test "
              f"accuracy {reference['test_accuracy']:.4f}, Hessian trace "
              f"{reference['hessian_trace']:.4g}.")
    runs = [{"experiment": "escape", "method": r["method"], "key": r["key"], "seed": r["seed"],
             "rho": r["rho"], "final": {k: v for k, v in r.items() if not isinstance(v, dict)},
             "history": r["history"]} for r in rows]
    common.write_results(out, EXAMPLE, vars(args), runs, {"escape": table},
                         {"sharpening": info, "normal": reference}, clock, argv)
    return rows, reference


if __name__ == "__main__":
    main()
