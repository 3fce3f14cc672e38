"""The `keras-flat` command line."""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_flat import algorithms  # noqa: E402
from keras_flat.app import demo  # noqa: E402
from keras_flat.app import landscape_command  # noqa: E402
from keras_flat.app.cli_arguments import add_renamed_flag  # noqa: E402
from keras_flat.app.cli_arguments import non_negative_float  # noqa: E402
from keras_flat.app.cli_arguments import non_negative_int  # noqa: E402
from keras_flat.app.cli_arguments import positive_float  # noqa: E402
from keras_flat.app.cli_arguments import positive_int  # noqa: E402

ALGORITHM_CHOICES = tuple(algorithms.names())


def add_demo_arguments(parser):
    """The options of `keras-flat demo` (shared with examples/compare_optimizers.py)."""
    parser.add_argument(
        "--dataset", default="digits",
        help="Dataset: 'digits' (scikit-learn's bundled 8x8 digits) or 'mnist1d' (MNIST-1D, "
             "generated locally; needs keras-flat[datasets]), both offline, or a TensorFlow "
             "Datasets name such as 'mnist' (downloads; needs internet and "
             "keras-flat[datasets]). Default: digits.")
    choices = ", ".join(f"{e.name} ({e.label})" for e in algorithms.registry.entries())
    parser.add_argument(
        "--algorithms", nargs="+", default=["none", "sam", "rs", "sa"], choices=ALGORITHM_CHOICES,
        metavar="NAME",
        help=f"Algorithms to compare, from: {choices}. Default: none sam rs sa.")
    add_renamed_flag(parser, "--methods", "--algorithms")
    parser.add_argument("--epochs", type=positive_int, default=30,
                        help="Epochs per algorithm (the same budget for all). Default: 30.")
    parser.add_argument(
        "--loss", default="mse", choices=demo.LOSSES,
        help="Training loss: 'mse' (squared loss on one-hot labels, whose interpolating "
             "minima make the trace a measure of flatness) or 'crossentropy' (whose trace "
             "also falls as logits grow). Default: mse.")
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="Training batch size. Default: 32.")
    parser.add_argument("--learning-rate", type=positive_float, default=0.05,
                        help="SGD learning rate (momentum 0.9) for every algorithm. Default: 0.05.")
    add_renamed_flag(parser, "--lr", "--learning-rate")
    parser.add_argument("--hidden", type=positive_int, default=64,
                        help="Width of the MLP's hidden layer. Default: 64.")
    for entry in algorithms.registry.entries():
        key = demo.radius_argument(entry.name)
        if key is None:
            continue
        parser.add_argument(
            f"--{entry.name}-{key}", dest=f"{entry.name}_radius", type=non_negative_float,
            default=None, metavar=key.upper(),
            help=f"Perturbation {'radius' if key == 'rho' else 'scale'} ({key}) of "
                 f"{entry.label}. Default: {demo.describe_default(entry.name, key)}.")
    parser.add_argument(
        "--sa-paper-rule", action="store_true",
        help="Run SA exactly as Algorithm 2 (one random sign, uncentered), i.e. with the "
             "class's defaults center=False, antithetic=False. By default the demo runs SA "
             "with center=True and antithetic=True (demo settings), which keep its expected "
             "step and remove the per-example noise that hurts accuracy at this learning rate.")
    parser.add_argument("--num-probes", type=positive_int, default=16,
                        help="Hutchinson probes per trace measurement. Default: 16.")
    add_renamed_flag(parser, "--probes", "--num-probes")
    parser.add_argument("--probe-examples", type=positive_int, default=256,
                        help="Training examples in the fixed set the Hessian is measured on. "
                             "Default: 256.")
    parser.add_argument("--output-dir", default="keras_flat_demo", metavar="DIR",
                        help="Where to write results.md, results.json and plot.png. "
                             "Default: ./keras_flat_demo.")
    add_renamed_flag(parser, "--out", "--output-dir")
    parser.add_argument("--no-plot", action="store_true", help="Do not write the PNG plot.")
    parser.add_argument("--quiet", action="store_true", help="Hide the Keras progress bars.")


def run_demo(args, seeds=(0,), title="keras-flat demo", stem="results"):
    """Runs the comparison the parsed `args` describe; returns (rows, results).

    Writes `<stem>.md` (the table), `<stem>.json` (every number) and, unless
    `args.no_plot`, `plot.png` (or `<stem>.png`) into `args.output_dir`.
    """
    rhos = {e.name: getattr(args, f"{e.name}_radius", None)
            for e in algorithms.registry.entries()}
    landscape = getattr(args, "landscape", False)
    dataset = demo.datasets.load(args.dataset) if landscape else args.dataset
    notes = demo.demo_settings(args.algorithms, rhos, sa_paper_rule=args.sa_paper_rule)
    if notes:
        print(notes)
    results = demo.compare(
        dataset=dataset, names=args.algorithms, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate, seeds=seeds,
        rhos=rhos, num_probes=args.num_probes, probe_examples=args.probe_examples,
        hidden=args.hidden, verbose=0 if args.quiet else 1, loss=args.loss,
        sa_paper_rule=args.sa_paper_rule, keep_models=landscape,
    )
    rows = demo.summary_rows(results)
    table = demo.format_table(rows)
    os.makedirs(args.output_dir, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k != "func"}
    with open(os.path.join(args.output_dir, f"{stem}.md"), "w") as f:
        f.write(f"# {title}\n\nSettings: `{json.dumps(settings)}`, seeds {list(seeds)}\n\n")
        if notes:
            f.write(notes + "\n\n")
        f.write(table + "\n")
    with open(os.path.join(args.output_dir, f"{stem}.json"), "w") as f:
        json.dump({"settings": settings, "seeds": list(seeds), "summary": rows,
                   "runs": [{**{k: v for k, v in r.__dict__.items()
                                if k not in ("history", "model")},
                             "history": {k: [float(x) for x in v] for k, v in r.history.items()}}
                            for r in results]}, f, indent=1)
    print("\n" + table)
    if not args.no_plot:
        image = "plot.png" if stem == "results" else f"{stem}.png"
        path = demo.plot(results, os.path.join(args.output_dir, image), title=title)
        print(f"\nPlot: {path}")
    if landscape:
        paths = demo.plot_landscapes(results[:len(args.algorithms)], dataset, args.algorithms,
                                     args.output_dir,
                                     loss=args.loss, probe_examples=args.probe_examples,
                                     seed=seeds[0])
        print(f"Landscape: {paths[-1]}")
    print(f"Results: {os.path.join(args.output_dir, stem + '.md')}")
    return rows, results


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="keras-flat",
        description="Train Keras models toward flat minima and measure how flat they are.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo_parser = sub.add_parser(
        "demo", help="compare plain SGD, SAM, RS and SA on one small model",
        description="Train one small MLP on a real dataset with each algorithm under the same "
                    "budget; log the Hessian trace and top eigenvalue every epoch; print a "
                    "comparison table (train/test accuracy, final trace, top eigenvalue, time "
                    "per step) and write a plot of trace and test accuracy per epoch. Some rules "
                    "run with demo settings suited to this small model (a larger radius for RS "
                    "and SA, SA centered and antithetic); their help says so, and the demo "
                    "prints them next to the classes' own defaults.")
    add_demo_arguments(demo_parser)
    demo_parser.add_argument("--seed", type=non_negative_int, default=0,
                             help="Random seed, an integer >= 0. Default: 0.")
    demo_parser.add_argument(
        "--landscape", action="store_true",
        help="Also plot each algorithm's minimum along the same filter-normalised random "
             "directions (1D and 2D, one loss scale): landscape.png and CSV files.")
    landscape_parser = sub.add_parser(
        "landscape", help="plot a saved model's loss landscape",
        description="Evaluate a saved, compiled Keras model's training loss on a line and a "
                    "plane through its weights (filter-normalised random directions or the top "
                    "Hessian eigenvectors), without changing it; write 1D and 2D plots and CSV "
                    "files of the values.")
    landscape_command.add_arguments(landscape_parser)
    args = parser.parse_args(argv)
    if args.command == "landscape":
        landscape_command.run(args, landscape_parser)
        return 0
    if args.command != "demo":
        parser.print_help()
        return 2
    run_demo(args, seeds=(args.seed,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
