"""Plain SGD, SAM, ASAM, RS and SA on the same model and budget, over seeds.

This is what `keras-flat demo` runs, with more options: every algorithm
trains the same MLP from the same initial weights on the same data for the
same number of epochs, once per seed; the table reports the mean and spread
(sample standard deviation) over seeds of train and test accuracy, final
Hessian trace, top eigenvalue and time per step, and the plot shows the
per-epoch trace and test accuracy (mean, with the range over seeds shaded).

Usage:
    python examples/compare_optimizers.py [--seeds 0 1 2] [--epochs 30] [--quick] [--output-dir DIR]
    python examples/compare_optimizers.py --help   # every option of keras-flat demo
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from keras_flat.app import cli  # noqa: E402
from keras_flat.app import demo  # noqa: E402

import common  # noqa: E402

EXAMPLE = "compare_optimizers"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_demo_arguments(parser)
    parser.set_defaults(algorithms=["none", "sam", "asam", "rs", "sa"],
                        output_dir=os.path.join("examples_output", EXAMPLE))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds; each runs every algorithm (default 0 1 2)")
    parser.add_argument("--quick", action="store_true",
                        help="a short run for tests: 3 epochs, seeds 0 1, small probe")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds, args.num_probes, args.probe_examples = 3, [0, 1], 8, 128
        args.quiet = True
    clock = common.Clock()
    common.output_dir(args.output_dir)
    rows, results = cli.run_demo(args, seeds=tuple(args.seeds), title=EXAMPLE, stem=EXAMPLE)
    runs = [{"experiment": "from scratch", "method": r.algorithm, "seed": r.seed,
             "final": {k: v for k, v in vars(r).items() if k not in ("history", "algorithm")},
             "history": {k: [float(x) for x in v] for k, v in r.history.items()}}
            for r in results]
    common.write_results(args.output_dir, EXAMPLE, vars(args), runs,
                         {"summary": demo.format_table(rows)}, {"summary": rows}, clock, argv)
    return rows, results


if __name__ == "__main__":
    main()
