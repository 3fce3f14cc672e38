"""keras-flat beside its peers: step and Hessian costs, each relative to its own framework.

Table 1, step cost: the time of one training step (batch 128) of each
algorithm as a ratio to a plain training step of the same framework on the
same architecture and batches, interleaving every variant of every framework
round by round (medians over `--repeats` rounds):

- keras-flat (Keras 3): `FlatMinimaModel` with no rule ("none"), RS, SA (the
  paper's Algorithm 2) and SAM, through `fit` and through a bare
  `train_on_batch` loop; the denominator is a plain `keras.Model`.
- tf_keras (Keras 2): `tf_keras.models.experimental.SharpnessAwareMinimization`,
  `fit` and loop, over a plain tf_keras model. When `tf_keras` is installed.
- PyTorch: a SAM step written here from Foret et al. (2021), `torch_sam_step`
  (the two-pass scheme of the most used PyTorch implementation), over a
  plain PyTorch step (`torch_plain_step`). When `torch` is installed. PyTorch
  runs with as many threads as TensorFlow's intra-op pool (all cores by
  default), set with `torch.set_num_threads`.

All use SGD(0.01, momentum 0.9) and sparse softmax cross-entropy on logits.

Table 2, Hessian cost: the time of one Hessian-vector product inside each
estimator, in units of one gradient of the same framework on the same batch
(BatchNorm in inference mode, as both libraries measure by default):

- keras-flat: one Hutchinson probe of `hessian_trace` on a reused
  `HessianOperator`; one probe of the one-line call
  `hessian_trace(model, (x, y), num_probes=K)` on a fresh model (including
  tracing and the choice of the HVP method) and repeated on the same model;
  one iteration of `top_eigenvalues` with `estimator="power"` and
  `"lanczos"` (`rtol=0`, so they run the full `--iterations` budget;
  divided by the products actually used). The gradient is the operator's
  compiled `loss_and_gradient`.
- PyHessian: one probe of `hessian(...).trace(maxIter=K)` and one power
  iteration of `.eigenvalues(maxIter=N)` (both with `tol=-inf`, so they run
  every iteration), and the construction of `hessian(...)`, which computes
  the gradient with `create_graph=True`. When `torch` and `pyhessian` are
  installed. The gradient is `torch.autograd.grad` of the loss.

The models: "mlp-wide" (784-512-512-10) and "cnn" (four 3x3 convolutions with
BatchNorm on 32x32x3 inputs, benchmarks/common.py), built identically in each
framework (PyTorch's BatchNorm uses Keras's epsilon and momentum); the tables
give every framework's trainable parameter count. A peer that is not installed
is skipped with a message; `pip install -e ".[peers]"` installs them.

Run it on a quiet machine: PyTorch's rows suffer most from other load (its
OpenMP threads meet at every operation, so a step of many small operations,
like the MLP's SAM step, can take tens of times longer on a busy machine).

Usage:
    python -m benchmarks.peers [--models mlp-wide cnn] [--repeats 11] [--steps 20]
        [--num-probes 16] [--iterations 20]
"""

import argparse
import importlib
import os
import time
import warnings
from importlib import metadata

import keras  # noqa: E402  (after common sets the log level)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import common
from benchmarks import step_time
from keras_flat import hessian  # noqa: E402

INSTALL = 'pip install -e ".[peers]"'
MODELS = ("mlp-wide", "cnn", "cnn-nobn")
RHO = 0.05
# keras-flat's variants, by their names in benchmarks/step_time.py (whose
# `build` compiles them exactly as the step-time benchmark does).
KERAS_FLAT = {"plain": "plain keras", "none": "none (wrapper)", "rs": "rs", "sa": "sa",
              "sam": "sam"}


def optional(package, what):
    """The module `package`, or None after printing why `what` is skipped."""
    try:
        return importlib.import_module(package)
    except ImportError as error:
        print(f"Skipping {what}: the package `{package}` is not installed ({error}). "
              f"Install the peers with: {INSTALL}")
        return None


# --- PyTorch -------------------------------------------------------------------------------


def torch_model(kind, torch):
    """The architecture of `common.MODELS[kind]` in PyTorch (channels first)."""
    nn = torch.nn
    if kind == "mlp-wide":
        return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, 10))
    batchnorm = kind == "cnn"
    layers, channels = [], 3
    for i, filters in enumerate((32, 32, 64, 64)):
        layers.append(nn.Conv2d(channels, filters, 3, padding=1, bias=not batchnorm))
        if batchnorm:  # Keras's defaults: epsilon 1e-3, moving average 0.99.
            layers.append(nn.BatchNorm2d(filters, eps=1e-3, momentum=0.01))
        layers.append(nn.ReLU())
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2))
        channels = filters
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10)]
    return nn.Sequential(*layers)


def torch_data(x, y, torch):
    """NumPy inputs (channels last) and labels as PyTorch tensors (channels first)."""
    tx = torch.from_numpy(x)
    if tx.ndim == 4:
        tx = tx.permute(0, 3, 1, 2).contiguous()
    return tx, torch.from_numpy(np.asarray(y, np.int64))


def torch_plain_step(model, criterion, optimizer, x, y):
    """One plain step: gradient of the batch loss, then the optimizer."""
    optimizer.zero_grad(set_to_none=True)
    loss = criterion(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def torch_sam_step(model, criterion, optimizer, x, y, rho=RHO):
    """One SAM step (Foret et al. 2021, Algorithm 1) in PyTorch.

    1. g = grad L(w) on the batch; 2. e = rho g / ||g|| (one norm over all
    parameters) and w <- w + e; 3. g' = grad L(w + e) on the same batch;
    4. w <- w - e; 5. the base optimizer steps with g'. Both passes run in
    the model's current mode (BatchNorm's running statistics are updated by
    both in training mode, as in the usual PyTorch implementation).
    """
    import torch  # Optional: imported only where PyTorch runs.

    params = [p for p in model.parameters() if p.requires_grad]
    loss = criterion(model(x), y)
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = rho / (norm + 1e-12)
        offsets = [g * scale for g in grads]
        for p, e in zip(params, offsets):
            p.add_(e)
    optimizer.zero_grad(set_to_none=True)
    criterion(model(x), y).backward()
    with torch.no_grad():
        for p, e in zip(params, offsets):
            p.sub_(e)
    optimizer.step()
    return loss.detach()


def time_torch(step, x, y, batch_size=128):
    """Seconds per step of `step(x_batch, y_batch)` over the batches of x, y."""
    steps = len(x) // batch_size
    start = time.perf_counter()
    for i in range(steps):
        step(x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size])
    return (time.perf_counter() - start) / steps


def threads():
    """TensorFlow's intra-op threads (0 means one per core)."""
    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()


# --- Table 1: step cost --------------------------------------------------------------------


def count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def step_runners(kind, x, y, tf_keras, torch):
    """`{(framework, variant, mode): seconds-per-step callable}`, all warmed up."""
    runners, params = {}, {}
    for variant, name in KERAS_FLAT.items():
        model = step_time.build(kind, name, jit=False)
        common.time_fit(model, x[:256], y[:256])  # Trace and warm up.
        common.time_loop(model, x[:256], y[:256])
        params["keras-flat"] = count(model.trainable_variables)
        runners[("keras-flat", variant, "fit")] = lambda m=model: common.time_fit(m, x, y)
        runners[("keras-flat", variant, "loop")] = lambda m=model: common.time_loop(m, x, y)
    if tf_keras is not None:
        for variant in ("plain", "sam"):
            model = common.MODELS[kind](api=tf_keras)
            if variant == "sam":
                model = tf_keras.models.experimental.SharpnessAwareMinimization(model, rho=RHO)
            model.compile(optimizer=tf_keras.optimizers.SGD(0.01, momentum=0.9),
                          loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            common.time_fit(model, x[:256], y[:256])
            common.time_loop(model, x[:256], y[:256])
            params["tf_keras"] = count(model.trainable_variables)
            runners[("tf_keras", variant, "fit")] = lambda m=model: common.time_fit(m, x, y)
            runners[("tf_keras", variant, "loop")] = lambda m=model: common.time_loop(m, x, y)
    if torch is not None:
        tx, ty = torch_data(x, y, torch)
        for variant, step in (("plain", torch_plain_step), ("sam", torch_sam_step)):
            torch.manual_seed(0)
            model = torch_model(kind, torch).train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            criterion = torch.nn.CrossEntropyLoss()
            params["PyTorch"] = count(list(model.parameters()))

            def run(xb, yb, model=model, optimizer=optimizer, criterion=criterion, step=step):
                step(model, criterion, optimizer, xb, yb)

            time_torch(run, tx[:256], ty[:256])
            runners[("PyTorch", variant, "loop")] = lambda run=run: time_torch(run, tx, ty)
    return runners, params


LABELS = {
    ("keras-flat", "plain"): "plain keras.Model",
    ("keras-flat", "none"): "FlatMinimaModel, no rule (\"none\")",
    ("keras-flat", "rs"): "RS (\"rs\", Alg. 1)",
    ("keras-flat", "sa"): "SA (\"sa\", Alg. 2)",
    ("keras-flat", "sam"): "SAM (\"sam\")",
    ("tf_keras", "plain"): "plain tf_keras Model",
    ("tf_keras", "sam"): "SharpnessAwareMinimization",
    ("PyTorch", "plain"): "plain step",
    ("PyTorch", "sam"): "SAM step (benchmarks/peers.py)",
}


def step_rows(kind, medians, params):
    rows = []
    for (framework, variant) in LABELS:
        if (framework, variant, "loop") not in medians:
            continue
        row = {"model": kind, "framework": framework, "params": params[framework],
               "variant": LABELS[(framework, variant)]}
        for mode in ("loop", "fit"):
            t = medians.get((framework, variant, mode))
            if t is None:
                row[f"{mode} ms/step"] = row[f"{mode} ratio"] = "—"
                continue
            row[f"{mode} ms/step"] = 1000 * t
            row[f"{mode} ratio"] = t / medians[(framework, "plain", mode)]
        rows.append(row)
    return rows


# --- Table 2: Hessian cost -----------------------------------------------------------------


_timed = common.timed


def _keras_model(kind):
    model = common.MODELS[kind]()
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def hessian_runners(kind, x, y, probes, iterations, torch, pyhessian):
    """`{(framework, measurement): seconds callable}` in per-product units, warmed up."""
    model = _keras_model(kind)
    op = hessian.HessianOperator(model, (x, y))
    op.choose_method()
    kf = {
        "gradient": _timed(op.loss_and_gradient),
        "Hutchinson probe, operator reused": _timed(
            lambda: hessian.hessian_trace(op, num_probes=probes).samples, lambda _: probes),
        "Hutchinson probe, one-line call repeated": _timed(
            lambda: hessian.hessian_trace(model, (x, y), num_probes=probes).samples,
            lambda _: probes),
        "power iteration": _timed(
            lambda: hessian.top_eigenvalues(op, estimator="power", max_iterations=iterations,
                                            rtol=0.0),
            lambda result: result.iterations),
        "Lanczos iteration": _timed(
            lambda: hessian.top_eigenvalues(op, estimator="lanczos", max_iterations=iterations,
                                            rtol=0.0),
            lambda result: result.iterations),
    }

    def first_call():  # A fresh model each time: tracing and the HVP method's choice included.
        fresh = _keras_model(kind)
        return _timed(lambda: hessian.hessian_trace(fresh, (x, y), num_probes=probes).samples,
                      lambda _: probes)()

    kf["Hutchinson probe, one-line call on a fresh model (traces)"] = first_call
    runners = {("keras-flat", name): fn for name, fn in kf.items()}
    params = {"keras-flat": op.dimension}
    notes = [f"keras-flat HVP method: {op.method}"]
    if torch is not None:
        torch.manual_seed(0)
        tmodel = torch_model(kind, torch).eval()
        criterion = torch.nn.CrossEntropyLoss()
        tx, ty = torch_data(x, y, torch)
        tparams = [p for p in tmodel.parameters() if p.requires_grad]
        params["PyTorch"] = count(tparams)
        runners[("PyTorch", "gradient")] = _timed(
            lambda: torch.autograd.grad(criterion(tmodel(tx), ty), tparams))
        if pyhessian is not None:
            never = float("-inf")  # No early stop: every requested iteration runs.

            def construct():
                tmodel.zero_grad(set_to_none=True)  # Breaks the cycle backward() warns of.
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "Using backward\\(\\) with create_graph")
                    return pyhessian.hessian(tmodel, criterion, data=(tx, ty), cuda=False)

            h = construct()
            runners[("PyHessian", "hessian(...) construction")] = _timed(construct)
            runners[("PyHessian", "Hutchinson probe, trace()")] = _timed(
                lambda: h.trace(maxIter=probes, tol=never), len)
            runners[("PyHessian", "power iteration, eigenvalues()")] = _timed(
                lambda: h.eigenvalues(maxIter=iterations, tol=never), lambda _: iterations)
    for fn in runners.values():
        fn()  # Trace and warm up.
    return runners, params, notes


def hessian_rows(kind, medians, params):
    rows = []
    for (framework, name), t in medians.items():
        unit = medians[("PyTorch" if framework == "PyHessian" else framework, "gradient")]
        rows.append({"model": kind, "framework": framework,
                     "params": params["PyTorch" if framework == "PyHessian" else framework],
                     "measurement": name, "ms": 1000 * t, "gradients": t / unit})
    order = ["keras-flat", "PyTorch", "PyHessian"]
    return sorted(rows, key=lambda r: order.index(r["framework"]))


# --- main ----------------------------------------------------------------------------------


def run(kinds, repeats, steps, probes, iterations, peers):
    tf_keras, torch, pyhessian = peers["tf_keras"], peers["torch"], peers["pyhessian"]
    step_table, hessian_table, notes = [], [], []
    for kind in kinds:
        x, y = common.data(kind, steps)
        runners, params = step_runners(kind, x, y, tf_keras, torch)
        step_table += step_rows(kind, common.interleaved_medians(runners, repeats), params)
        hx, hy = x[:128], y[:128]
        runners, params, more = hessian_runners(kind, hx, hy, probes, iterations, torch,
                                                pyhessian)
        hessian_table += hessian_rows(kind, common.interleaved_medians(runners, repeats), params)
        notes += [f"{kind}: {n}" for n in more]
    return step_table, hessian_table, notes


def load_peers():
    """The optional peers' modules (None for each one missing, with a message)."""
    peers = {
        "tf_keras": optional("tf_keras", "the tf_keras SharpnessAwareMinimization rows"),
        "torch": optional("torch", "the PyTorch rows (SAM step, gradient, PyHessian)"),
    }
    peers["pyhessian"] = None
    if peers["torch"] is not None:
        peers["pyhessian"] = optional("pyhessian", "the PyHessian rows")
        peers["torch"].set_num_threads(threads())
    return peers


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["mlp-wide", "cnn"], choices=MODELS)
    parser.add_argument("--repeats", type=int, default=11, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=20, help="steps of batch 128 per timing")
    parser.add_argument("--num-probes", dest="probes", type=int, default=16,
                        help="Hutchinson probes per trace call")
    parser.add_argument("--iterations", type=int, default=20,
                        help="power and Lanczos iterations per eigenvalue call")
    args = parser.parse_args(argv)
    print(f"Machine: {common.machine()}")
    peers = load_peers()
    versions = [f"keras-flat {metadata.version('keras-flat')}"]
    versions += [f"{name} {metadata.version(name)}" for name, module in peers.items()
                 if module is not None]
    print(f"Peers: {', '.join(versions)}")
    if peers["torch"] is not None:
        print(f"PyTorch threads: {peers['torch'].get_num_threads()} (TensorFlow's intra-op "
              f"pool: {threads()})")
    steps, hessians, notes = run(args.models, args.repeats, args.steps, args.probes,
                                 args.iterations, peers)
    common.print_table(
        f"Step cost relative to each framework's plain step, batch 128 "
        f"(median of {args.repeats} interleaved rounds of {args.steps} steps)",
        steps, ["model", "framework", "params", "variant", "loop ms/step", "loop ratio",
                "fit ms/step", "fit ratio"])
    common.print_table(
        f"Hessian cost per Hessian-vector product, in gradients of the same framework, "
        f"batch 128, {args.probes} probes, {args.iterations} iterations "
        f"(median of {args.repeats})",
        hessians, ["model", "framework", "params", "measurement", "ms", "gradients"])
    for note in notes:
        print(f"\n{note}")
    return steps, hessians


if __name__ == "__main__":
    main()
