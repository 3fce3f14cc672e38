"""Helpers shared by the example scripts: methods, output folders, tables, results.json."""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_flat import algorithms  # noqa: E402
from keras_flat import hessian  # noqa: E402
from keras_flat.app.cli_arguments import add_renamed_flag  # noqa: E402

# The methods the examples compare: key -> (registered algorithm name, fixed
# options). "sa" is the paper's Algorithm 2 exactly; "sa-ca" adds the center
# and antithetic options, which keep its expected step but are not the
# paper's rule, so the registry labels it as a variant.
METHODS = {
    "none": ("none", {}),
    "sam": ("sam", {}),
    "rs": ("rs", {}),
    "sa": ("sa", {}),
    "sa-ca": ("sa", {"center": True, "antithetic": True}),
}


def make_algorithm(key, rho=None):
    """The algorithm of `METHODS[key]` with radius `rho` (ignored for plain SGD)."""
    name, options = METHODS[key]
    if name == "none":
        return algorithms.get("none")
    return algorithms.get(name, **({} if rho is None else {"rho": rho}), **options)


def label(key):
    """The registry's label of `METHODS[key]`, without its radius."""
    return algorithms.label(make_algorithm(key), radius=False)


def add_output_argument(parser, example):
    """`--output-dir DIR`, default examples_output/<example> (gitignored).

    `--out` is the deprecated spelling, as in `keras-flat landscape`.
    """
    parser.add_argument("--output-dir", dest="output_dir", metavar="DIR",
                        default=os.path.join("examples_output", example),
                        help=f"folder for results.json, results.md and {example}.png "
                             f"(default examples_output/{example})")
    add_renamed_flag(parser, "--out", "--output-dir")


def output_dir(path):
    os.makedirs(path, exist_ok=True)
    return path


def markdown_table(rows, columns, digits=4):
    """Rows (dicts) as a Markdown table; floats with `digits` significant digits."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{v:.{digits}g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_std(values, digits=3, percent=False):
    """'mean ± sample std' of a list of numbers (just the mean for one value)."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64) * (100.0 if percent else 1.0)
    text = f"{values.mean():.{digits}f}"
    if len(values) > 1:
        text += f" ± {values.std(ddof=1):.{digits}f}"
    return text


class Clock:
    """Wall and CPU seconds of this process since construction, and the load average."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.load_start = _load()

    def report(self):
        return {"wall_seconds": time.perf_counter() - self.wall,
                "cpu_seconds": time.process_time() - self.cpu,
                "load_average_1min_start": self.load_start,
                "load_average_1min_end": _load(), "cpu_count": os.cpu_count()}


def _load():
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        return float("nan")


def write_results(directory, example, settings, runs, tables, extra=None, clock=None,
                  argv=None):
    """Writes results.json and results.md into `directory`; prints the tables.

    Args:
        directory: Output folder (created if needed).
        example: The example's name.
        settings: Its parsed arguments (a dict).
        runs: One dict per method and seed: {"experiment", "method", "seed",
            "final": {metric: number}, "history": {metric: [per epoch or step]}}.
        tables: {title: Markdown table}, the tables the README quotes.
        extra: Any further JSON-serialisable results.
        clock: A `Clock` started at the beginning of the run, to record its time.
        argv: The example's arguments (default: the command line's).
    """
    output_dir(directory)
    argv = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python", f"examples/{example}.py"] + argv)
    results = {"example": example, "command": command,
               "settings": settings, "runs": runs, "tables": tables, **(extra or {})}
    if clock is not None:
        results["time"] = clock.report()
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)
    text = "\n\n".join(f"## {title}\n\n{table}" for title, table in tables.items())
    with open(os.path.join(directory, "results.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    if clock is not None:
        t = results["time"]
        print(f"\n{t['wall_seconds']:.0f} s wall, {t['cpu_seconds']:.0f} s CPU "
              f"(load average {t['load_average_1min_start']:.1f} at the start, "
              f"{t['load_average_1min_end']:.1f} at the end, {t['cpu_count']} cores)")
    print(f"\nWrote {os.path.join(directory, 'results.json')} and results.md")
    return results


class Flatness:
    """Hessian trace (Hutchinson) and top eigenvalue (Lanczos) of a model's loss on fixed data.

    One `HessianOperator` (double-backward products, traced once) serves
    every measurement; the probes are the same each time (common random
    numbers) and Lanczos starts from the previous top eigenvector.
    """

    def __init__(self, model, data, num_probes=16, eigen_iterations=30, seed=0,
                 batch_size=None):
        self.operator = hessian.HessianOperator(
            model, data, batch_size=batch_size, hvp_method="double_backward")
        self.num_probes, self.eigen_iterations, self.seed = num_probes, eigen_iterations, seed
        self.vectors = None

    def measure(self, eigenvalue=True):
        """Returns {"hessian_trace": ..., "top_eigenvalue": ...} at the current weights.

        With `eigenvalue=False` only the trace (the top eigenvalue is NaN).
        """
        trace = hessian.hessian_trace(self.operator, num_probes=self.num_probes, seed=self.seed)
        top = float("nan")
        if eigenvalue:
            result = hessian.top_eigenvalues(
                self.operator, num_eigenvalues=1, max_iterations=self.eigen_iterations, rtol=1e-3,
                seed=self.seed, initial_vectors=self.vectors)
            self.vectors, top = result.vectors, float(result.values[0])
        return {"hessian_trace": float(trace.value), "top_eigenvalue": top}




class EveryEpoch(keras.callbacks.Callback):
    """Calls `measure()` (returning a dict) at every epoch end and keeps the results."""

    def __init__(self, measure):
        super().__init__()
        self.measure, self.values = measure, []

    def on_epoch_end(self, epoch, logs=None):
        self.values.append(self.measure())
