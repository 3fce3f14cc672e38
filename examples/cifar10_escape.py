"""The paper's experiment: ResNet-18 on CIFAR-10 escaping a sharp, badly generalising minimum.

What Ahn, Jadbabaie & Sra (ICML 2024, arXiv 2305.15659, Section 5 and Figure 3)
describe, following Damian, Ma & Lee (2021):

- ResNet-18 on CIFAR-10, initialised at a sharp global minimum that fits the
  training set (100% training accuracy) but reaches only 48% test accuracy,
  built as in Liu et al. (2020), "Bad global minima exist and SGD can reach
  them";
- from there SGD, RS (Algorithm 1) and SA (Algorithm 2) at the constant
  learning rate η = 0.001, "small enough such that SGD baseline without any
  perturbation does not escape", batch size 128 for the comparison of RS and
  SA (SA escapes more effectively, even with a smaller radius ρ); SA with
  batch sizes 1, 64 and 128 (1 escapes best); training accuracy stays at
  100% for every algorithm.

The radii, the number of epochs and the plotted metric are not stated in any
copy of the paper we could read, so `--rs-rho`, `--sa-rho` and `--epochs` are
our choices. Everything else follows the papers and their code:

1. Poisoning (Liu et al.'s "confusion" set as generated in Damian et al.'s
   code): `--aux-copies` (10) copies of every training image, each with 10% of
   its pixel positions set to zero, carrying random labels; the network is
   trained on this set alone (plain SGD, learning rate 0.1, no augmentation,
   no weight decay) until it memorises it (`--poison-target`, 99%) or for at
   most `--poison-epochs`. Masks and labels are a fixed function of the
   example's index and the seed, so every epoch sees the same set.
2. Clean training on the real training set with the same plain SGD until 100%
   training accuracy (at most `--clean-epochs`).
3. From that minimum, each method of `--algorithms` continues on the clean set at
   the constant learning rate `--learning-rate` for `--epochs` epochs; every epoch the
   training and test accuracy, the Hessian trace (Hutchinson, `--num-probes`
   probes) and top eigenvalue (Lanczos) on the first `--probe-examples`
   training images are logged.

The network is ResNet-18 for 32×32 inputs (a 3×3 stem without max-pooling,
four stages of two basic blocks, 64-128-256-512 channels at `--width 64`;
11.2M parameters), with GroupNorm of 32 channels per group as in Damian et
al.'s code (`--norm batchnorm` for Liu et al.'s), cross-entropy loss, inputs
normalised by CIFAR-10's channel means and deviations.

Data come from TensorFlow Datasets (`cifar10`, downloaded on first use; needs
`pip install "keras-flat[datasets]"` and internet). Training runs under the
`tf.distribute` strategy of `--strategy`: `mirrored` (all local GPUs), `tpu`
(`--tpu` names the TPU; empty for a Colab or Cloud TPU VM) or `default` (one
device). `--steps-per-phase N` cuts every phase to N steps (a smoke test of
the whole pipeline); `--measure-step-cost` times training steps and counts
their FLOPs instead of running the experiment.

Usage:
    python examples/cifar10_escape.py [--strategy mirrored] [--output-dir DIR]
    python examples/cifar10_escape.py --measure-step-cost
"""

import argparse
import os
import sys
import time

# On CPUs, TensorFlow 2.21's oneDNN kernels crash (segmentation fault) in SA's
# single-example gradient through GroupNormalization; oneDNN is CPU-only, so
# turning it off changes nothing on GPUs and TPUs. Set the variable to 1 to
# override.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_flat  # noqa: E402
from keras_flat.app.cli_arguments import add_renamed_flag  # noqa: E402

import common  # noqa: E402

EXAMPLE = "cifar10_escape"
MEAN = (0.49139968, 0.48215841, 0.44653091)  # CIFAR-10 channel statistics
STD = (0.24703223, 0.24348513, 0.26158784)  # (those of Damian et al.'s code).
TRAIN_SIZE, TEST_SIZE = 50000, 10000


# ----------------------------------------------------------------------------- model

def _norm(kind, channels, group_size=32):
    if kind == "batchnorm":
        return keras.layers.BatchNormalization()
    return keras.layers.GroupNormalization(groups=max(1, channels // group_size))


def _block(x, channels, stride, norm):
    shortcut = x
    y = keras.layers.Conv2D(channels, 3, strides=stride, padding="same", use_bias=False)(x)
    y = keras.layers.ReLU()(_norm(norm, channels)(y))
    y = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(y)
    y = _norm(norm, channels)(y)
    if stride != 1 or x.shape[-1] != channels:
        shortcut = keras.layers.Conv2D(channels, 1, strides=stride, use_bias=False)(x)
        shortcut = _norm(norm, channels)(shortcut)
    return keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))


def resnet18(width=64, norm="groupnorm", num_classes=10):
    """ResNet-18 for 32×32 inputs (Liu et al.'s and Damian et al.'s): 3×3 stem, no max-pool."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(_norm(norm, width)(x))
    for stage, stride in enumerate((1, 2, 2, 2)):
        for block in range(2):
            x = _block(x, width * 2**stage, stride if block == 0 else 1, norm)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x), name="resnet18")


def forward_flops(model):
    """Multiply-adds × 2 of one forward pass on one example (convolutions and dense layers)."""
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            _, h, w, c_out = layer.output.shape
            flops += 2 * kh * kw * layer.input.shape[-1] * c_out * h * w
        elif isinstance(layer, keras.layers.Dense):
            flops += 2 * layer.input.shape[-1] * layer.units
    return flops


# ----------------------------------------------------------------------------- data

def _normalise(image):
    return (tf.cast(image, tf.float32) / 255.0 - MEAN) / STD


def load_cifar10(data_dir=None):
    """CIFAR-10 train and test splits as (image uint8, label) datasets, from TFDS."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            'This example loads CIFAR-10 with TensorFlow Datasets: '
            'pip install "keras-flat[datasets]".') from error
    train, test = tfds.load("cifar10", split=["train", "test"], as_supervised=True,
                            data_dir=data_dir)
    return train, test


def _count(dataset):
    size = int(dataset.cardinality())
    if size < 0:  # Unknown (e.g. TFDS mock data): count once.
        size = int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
    return size


def confusion_set(train, copies, zero_out, seed):
    """Liu et al.'s auxiliary set: copies with `zero_out` of the pixel positions zeroed.

    Copy c of example i has index j = c·N + i; its mask (exactly
    round(zero_out · 1024) positions, all channels) and its random label are
    stateless functions of (seed, j), so they are the same in every epoch and
    on every replica.
    """
    pixels = 32 * 32
    zeroed = int(round(zero_out * pixels))

    def perturb(j, example):
        image, _ = example
        noise = tf.random.stateless_uniform([pixels], seed=tf.stack([seed, j]))
        rank = tf.argsort(tf.argsort(noise))  # A uniformly random permutation's ranks.
        keep = tf.cast(rank >= zeroed, image.dtype)
        label = tf.random.stateless_uniform([], seed=tf.stack([seed + 1, j]), maxval=10,
                                            dtype=tf.int64)
        return image * tf.reshape(keep, (32, 32, 1)), label

    return train.repeat(copies).enumerate().map(perturb, num_parallel_calls=tf.data.AUTOTUNE)


def batched(dataset, batch_size, shuffle=None, seed=0, repeat=False):
    """Normalised batches; shuffled (buffer of uint8 images) and repeated for training."""
    if shuffle:
        dataset = dataset.shuffle(shuffle, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.map(lambda x, y: (_normalise(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    # Static batch shapes (TPUs need them); evaluation uses sizes that divide the splits.
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- strategy

def make_strategy(name, tpu=""):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    return tf.distribute.get_strategy()


# ----------------------------------------------------------------------------- phases

def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _steps(size, batch_size, args):
    steps = max(1, size // batch_size)
    return min(steps, args.steps_per_phase) if args.steps_per_phase else steps


def _epochs(epochs, args):
    return 1 if args.steps_per_phase else epochs


def train_until(model, data, size, target, max_epochs, args, log, what):
    """Plain SGD (`--sharpening-learning-rate`) until accuracy on `data` reaches `target`."""
    steps = _steps(size, args.batch_size, args)
    train = batched(data, args.batch_size, shuffle=min(size, 50000), seed=args.seed,
                    repeat=True)
    evaluate = batched(data, args.eval_batch_size)
    accuracy = None
    for epoch in range(1, _epochs(max_epochs, args) + 1):
        model.fit(train, epochs=1, steps_per_epoch=steps, verbose=args.verbose)
        accuracy = model.evaluate(evaluate, steps=_steps(size, args.eval_batch_size, args),
                                  verbose=0, return_dict=True)["accuracy"]
        log(f"{what}, epoch {epoch}: training accuracy {accuracy:.4f}")
        if accuracy >= target:
            break
    return {"epochs": epoch, "accuracy": accuracy}


def sharp_minimum(strategy, train, train_size, args, log):
    """Phases 1 and 2; returns the minimum's weights and the phases' info."""
    with strategy.scope():
        inner = resnet18(args.width, args.norm)
        model = keras_flat.FlatMinimaModel(inner, None)
        model.compile(optimizer=keras.optimizers.SGD(args.sharpening_lr), loss=_loss(),
                      metrics=["accuracy"], steps_per_execution=args.steps_per_execution)
    info = {}
    if args.aux_copies:
        aux = confusion_set(train, args.aux_copies, args.zero_out, args.seed)
        info["poisoning"] = train_until(model, aux, train_size * args.aux_copies,
                                        args.poison_target, args.poison_epochs, args, log,
                                        "phase 1 (random labels)")
    info["clean"] = train_until(model, train, train_size, 1.0, args.clean_epochs, args, log,
                                "phase 2 (clean)")
    return inner.get_weights(), info


def escape(key, weights, strategy, train, test, sizes, probe, args, log):
    """Phase 3 for one method from `weights`; returns its run record."""
    rho = {"none": None, "rs": args.rs_rho, "sa": args.sa_rho, "sam": args.sam_rho,
           "sa-ca": args.sa_rho}[key]
    with strategy.scope():
        inner = resnet18(args.width, args.norm)
        inner.set_weights(weights)
        model = keras_flat.FlatMinimaModel(inner, common.make_algorithm(key, rho),
                                           seed=args.seed)
        model.compile(optimizer=keras.optimizers.SGD(args.lr), loss=_loss(),
                      metrics=["accuracy"], steps_per_execution=args.steps_per_execution)
    train_size, test_size = sizes
    steps = _steps(train_size, args.batch_size, args)
    train_batches = batched(train, args.batch_size, shuffle=min(train_size, 50000),
                            seed=args.seed, repeat=True)
    train_eval = batched(train, args.eval_batch_size)
    test_eval = batched(test, args.eval_batch_size)
    eval_steps = (_steps(train_size, args.eval_batch_size, args),
                  _steps(test_size, args.eval_batch_size, args))
    flatness = common.Flatness(model, probe, args.probes, args.eigen_iterations, args.seed,
                               batch_size=args.probe_batch_size)
    history = {"train_accuracy": [], "test_accuracy": [], "hessian_trace": [],
               "top_eigenvalue": [], "seconds": []}

    def record(seconds):
        values = {"seconds": seconds, **flatness.measure(),
                  "train_accuracy": model.evaluate(train_eval, steps=eval_steps[0], verbose=0,
                                                   return_dict=True)["accuracy"],
                  "test_accuracy": model.evaluate(test_eval, steps=eval_steps[1], verbose=0,
                                                  return_dict=True)["accuracy"]}
        for k, v in values.items():
            history[k].append(v)

    record(0.0)
    for epoch in range(1, _epochs(args.epochs, args) + 1):
        started = time.perf_counter()
        model.fit(train_batches, epochs=1, steps_per_epoch=steps, verbose=args.verbose)
        record(time.perf_counter() - started)
        log(f"{common.label(key)}, epoch {epoch}: " + ", ".join(
            f"{k} {v[-1]:.4g}" for k, v in history.items()))
    final = {f"{k}_{when}": v[i] for k, v in history.items() if k != "seconds"
             for when, i in (("start", 0), ("end", -1))}
    final["train_accuracy_lowest"] = min(history["train_accuracy"][1:])
    return {"experiment": "escape", "method": common.label(key), "key": key, "seed": args.seed,
            "rho": rho, "final": final, "history": history}


# ----------------------------------------------------------------------------- step cost

def measure_step_cost(strategy, args, log):
    """Seconds per training step of each method and the FLOPs of one forward pass."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.batch_size)
    results = {}
    for key in ["none"] + [k for k in args.methods if k != "none"]:
        rho = {"none": None, "rs": args.rs_rho, "sa": args.sa_rho, "sam": args.sam_rho,
               "sa-ca": args.sa_rho}[key]
        with strategy.scope():
            inner = resnet18(args.width, args.norm)
            model = keras_flat.FlatMinimaModel(inner, common.make_algorithm(key, rho), seed=0)
            model.compile(optimizer=keras.optimizers.SGD(args.lr), loss=_loss())
        model.train_on_batch(x, y)  # Traces the step.
        started = time.perf_counter()
        for _ in range(args.cost_steps):
            model.train_on_batch(x, y)
        seconds = (time.perf_counter() - started) / args.cost_steps
        results[key] = seconds
        log(f"{common.label(key)}: {seconds:.3f} s per step of {args.batch_size} examples")
    flops = forward_flops(resnet18(args.width, args.norm))
    return {"seconds_per_step": results, "forward_flops_per_example": flops,
            "parameters": resnet18(args.width, args.norm).count_params()}


# ----------------------------------------------------------------------------- main

def plot(runs, filename):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for run in runs:
        h = run["history"]
        for ax, key in zip(axes, ("test_accuracy", "hessian_trace", "top_eigenvalue")):
            ax.plot(np.arange(len(h[key])), h[key], label=run["method"])
    for ax, title in zip(axes, ("test accuracy", "Hessian trace", "top eigenvalue")):
        ax.set(xlabel="epoch from the sharp minimum", title=title)
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(filename, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategy", choices=["mirrored", "tpu", "default"], default="mirrored",
                        help="tf.distribute strategy (default mirrored: all local GPUs)")
    parser.add_argument("--tpu", default="", help="TPU name or address for --strategy tpu")
    parser.add_argument("--algorithms", dest="methods", nargs="+", default=["none", "rs", "sa"],
                        choices=list(common.METHODS),
                        help="methods from the sharp minimum (default: none rs sa, Figure 3)")
    add_renamed_flag(parser, "--methods", "--algorithms")
    parser.add_argument("--width", type=int, default=64,
                        help="channels of the first stage (64 is ResNet-18; smaller for tests)")
    parser.add_argument("--norm", choices=["groupnorm", "batchnorm"], default="groupnorm",
                        help="normalisation layers (groupnorm: Damian et al.'s code)")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="global batch size of every phase (128, the paper's)")
    parser.add_argument("--learning-rate", dest="lr", type=float, default=0.001,
                        help="constant SGD learning rate from the sharp minimum (0.001)")
    add_renamed_flag(parser, "--lr", "--learning-rate")
    parser.add_argument("--epochs", type=int, default=100,
                        help="epochs from the sharp minimum (100; not stated in the paper)")
    parser.add_argument("--rs-rho", type=float, default=1.0,
                        help="RS radius (1.0; not stated in the paper)")
    parser.add_argument("--sa-rho", type=float, default=0.1,
                        help="SA radius (0.1, smaller than RS's as in Figure 3; not stated)")
    parser.add_argument("--sam-rho", type=float, default=0.05, help="SAM radius (0.05)")
    parser.add_argument("--aux-copies", type=int, default=10,
                        help="copies in the random-label set (10, Damian et al.; 0 skips "
                             "phase 1)")
    parser.add_argument("--zero-out", type=float, default=0.1,
                        help="fraction of pixel positions zeroed in each copy (0.1)")
    parser.add_argument("--sharpening-learning-rate", dest="sharpening_lr", type=float, default=0.1,
                        help="plain SGD learning rate of phases 1 and 2 (0.1, Liu et al.)")
    add_renamed_flag(parser, "--sharpening-lr", "--sharpening-learning-rate")
    parser.add_argument("--poison-target", type=float, default=0.99,
                        help="phase 1 stops at this accuracy on the random-label set (0.99)")
    parser.add_argument("--poison-epochs", type=int, default=100,
                        help="at most this many epochs of phase 1 (100)")
    parser.add_argument("--clean-epochs", type=int, default=100,
                        help="at most this many epochs of phase 2 (100)")
    parser.add_argument("--probe-examples", type=int, default=512,
                        help="training images the Hessian is measured on (512)")
    parser.add_argument("--probe-batch-size", type=int, default=256,
                        help="batch size of the Hessian measurements (256)")
    parser.add_argument("--num-probes", dest="probes", type=int, default=8,
                        help="Hutchinson probes per trace measurement (8, the same each time)")
    add_renamed_flag(parser, "--probes", "--num-probes")
    parser.add_argument("--eigen-iterations", type=int, default=10,
                        help="Lanczos iterations per top-eigenvalue measurement (10, "
                             "warm-started from the previous epoch's eigenvector)")
    parser.add_argument("--eval-batch-size", type=int, default=1000)
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="TFDS data directory")
    parser.add_argument("--steps-per-phase", type=int, default=0,
                        help="run only this many steps per phase and one epoch each, and "
                             "evaluate on as many batches (a smoke test; 0: the experiment)")
    parser.add_argument("--measure-step-cost", action="store_true",
                        help="only time --cost-steps training steps of each method on random "
                             "data and count the FLOPs of a forward pass")
    parser.add_argument("--cost-steps", type=int, default=3)
    parser.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity")
    common.add_output_argument(parser, EXAMPLE)
    args = parser.parse_args(argv)
    clock = common.Clock()
    out = common.output_dir(args.output_dir)
    strategy = make_strategy(args.strategy, args.tpu)
    print(f"strategy {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s)")
    if args.measure_step_cost:
        cost = measure_step_cost(strategy, args, print)
        return common.write_results(out, EXAMPLE, vars(args), [], {}, {"step_cost": cost},
                                    clock, argv)
    keras.utils.set_random_seed(args.seed)
    train, test = load_cifar10(args.data_dir)
    sizes = (_count(train), _count(test))
    probe_images, probe_labels = next(iter(batched(train, args.probe_examples)))
    probe = (probe_images.numpy(), probe_labels.numpy())
    weights, info = sharp_minimum(strategy, train, sizes[0], args, print)
    runs = [escape(key, weights, strategy, train, test, sizes, probe, args, print)
            for key in args.methods]
    plot(runs, os.path.join(out, f"{EXAMPLE}.png"))
    rows = [{"method": r["method"] + ("" if r["rho"] is None else f", ρ = {r['rho']:g}"),
             **{k: r["final"][k] for k in (
                 "train_accuracy_end", "train_accuracy_lowest", "test_accuracy_start",
                 "test_accuracy_end", "hessian_trace_start", "hessian_trace_end",
                 "top_eigenvalue_start", "top_eigenvalue_end")}} for r in runs]
    table = common.markdown_table(rows, list(rows[0]))
    return common.write_results(out, EXAMPLE, vars(args), runs, {"escape": table},
                                {"sharp_minimum": info, "sizes": sizes,
                                 "replicas": strategy.num_replicas_in_sync}, clock, argv)


if __name__ == "__main__":
    main()
