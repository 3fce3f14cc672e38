"""Step time of each algorithm relative to plain Keras `fit`, in one run.

Times one `fit` epoch per variant, and the same batches through a
`train_on_batch` loop, interleaving the variants round by round, and prints
the median per-step times and their ratios to plain `keras.Model` training
on the same model and data. The throughput of `fit` on small CPU machines
flips between a two-core and a one-core rate from epoch to epoch, so the
`fit` ratios are noisy; the loop runs steadily and its ratios are the ones
to compare with the targets. Variants: plain Keras, FlatMinimaModel with no
perturbation, RS, RS with a tolerance that always skips the perturbation,
SA, SAM, SAM perturbing every fourth step (`interval=4`) and ASAM.

Also GSAM, LookSAM (`k=5`, expected ratio about 1 + 1/5) and RWP.

Targets: RS, SAM, ASAM, GSAM, RWP <= 2.05x (two gradient evaluations), RS
skipping <= 1.05x, SA <= 1.3x on models without BatchNorm ("cnn-nobn"; it
gathers its example), SAM with `interval=4` <= 1.3x. With BatchNorm ("cnn")
SA's example keeps its place in the batch (its share of the batch loss), so
each of its two example gradients is a batch-sized pass: about 3x.
"transformer" (an encoder block with
LayerNorm and Dropout) and "lstm" (an LSTM text model) are token models.

Usage:
    python -m benchmarks.step_time [--models mlp mlp-wide cnn cnn-nobn transformer lstm]
        [--repeats 7] [--steps 30] [--variants rs sa ...]
"""

import argparse

import keras  # noqa: E402  (after common sets the log level)

import keras_flat  # noqa: E402
from benchmarks import common

VARIANTS = {
    "plain keras": None,
    "none (wrapper)": lambda: keras_flat.algorithms.NoPerturbation(),
    "rs": lambda: keras_flat.algorithms.RandomSmoothing(rho=0.1),
    "rs (skipping)": lambda: keras_flat.algorithms.RandomSmoothing(rho=0.1, tolerance=0.0),
    "sa": lambda: keras_flat.algorithms.SharpnessAware(rho=0.05),
    "sam": lambda: keras_flat.algorithms.SAM(rho=0.05),
    "sam (interval 4)": lambda: keras_flat.algorithms.SAM(rho=0.05, interval=4),
    "asam": lambda: keras_flat.algorithms.ASAM(rho=0.5),
    "gsam": lambda: keras_flat.algorithms.GSAM(rho=0.05),
    "looksam (k 5)": lambda: keras_flat.algorithms.LookSAM(rho=0.05, interval=5),
    "rwp": lambda: keras_flat.algorithms.RWP(sigma=0.01),
}


def build(kind, variant, jit):
    inner = common.MODELS[kind]()
    factory = VARIANTS[variant]
    model = inner if factory is None else keras_flat.FlatMinimaModel(inner, factory(), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=jit)
    return model


def run(kinds, repeats, steps, jit=False, variants=None):
    variants = list(VARIANTS) if variants is None else ["plain keras", *variants]
    rows = []
    for kind in kinds:
        x, y = common.data(kind, steps)
        models, failed = {}, {}
        for v in dict.fromkeys(variants):  # Trace and warm up; a variant that fails is reported.
            model = build(kind, v, jit)
            try:
                common.time_fit(model, x[:256], y[:256])
            except Exception as error:  # noqa: BLE001 - reported in the table
                failed[v] = f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"
                continue
            models[v] = model
        runners = {}
        for v, m in models.items():
            runners[("fit", v)] = lambda m=m, x=x, y=y: common.time_fit(m, x, y)
            runners[("loop", v)] = lambda m=m, x=x, y=y: common.time_loop(m, x, y)
        medians = common.interleaved_medians(runners, repeats)
        for v in models:
            fit, loop = medians[("fit", v)], medians[("loop", v)]
            rows.append({
                "model": kind, "variant": v,
                "loop ms/step": 1000 * loop,
                "loop ratio": loop / medians[("loop", "plain keras")],
                "fit ms/step": 1000 * fit,
                "fit ratio": fit / medians[("fit", "plain keras")],
            })
        for v, reason in failed.items():
            rows.append({"model": kind, "variant": f"{v}: fails ({reason})"})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+",
                        default=["mlp", "cnn", "cnn-nobn", "transformer", "lstm"],
                        choices=sorted(common.MODELS))
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds per variant")
    parser.add_argument("--steps", type=int, default=30, help="steps of batch 128 per timed epoch")
    parser.add_argument("--jit", action="store_true", help="compile with jit_compile=True")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS)[1:],
                        help="variants to time besides plain keras (default: all)")
    args = parser.parse_args(argv)
    print(f"Machine: {common.machine()}")
    rows = run(args.models, args.repeats, args.steps, args.jit, args.variants)
    common.print_table(
        f"Step time, batch 128, jit_compile={args.jit} (median of {args.repeats})",
        rows,
        ["model", "variant", "loop ms/step", "loop ratio", "fit ms/step", "fit ratio"],
    )
    return rows


if __name__ == "__main__":
    main()
