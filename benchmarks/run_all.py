"""Runs every benchmark and writes benchmarks/RESULTS.md.

Each benchmark runs in its own process (the distributed one must configure
logical devices before TensorFlow starts) and prints Markdown tables of
ratios to plain Keras measured in the same run; this script collects them,
with the machine they ran on and the commands that produced them.

Usage:
    python -m benchmarks            # or: python benchmarks/run_all.py
    python -m benchmarks --quick    # fewer repeats, for a smoke run
"""

import argparse
import datetime
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

BENCHMARKS = [
    ("Step time of each algorithm", "benchmarks.step_time", ["--repeats", "3", "--steps", "15"],
     ["--repeats", "2", "--steps", "5"]),
    ("Random draws against TensorFlow's generators", "benchmarks.draws", ["--repeats", "21"],
     ["--repeats", "3"]),
    ("Hessian-vector products and trace estimates", "benchmarks.hvp", ["--repeats", "7"],
     ["--repeats", "2"]),
    ("Repeated one-line measurements", "benchmarks.repeated_calls", ["--repeats", "3"],
     ["--repeats", "1", "--width", "32"]),
    ("Distributed training on 1 and 2 logical devices", "benchmarks.distributed",
     ["--repeats", "5", "--steps", "40"], ["--repeats", "2", "--steps", "8"]),
    ("Loss-landscape surfaces", "benchmarks.landscape", ["--repeats", "7", "--loop-points", "63"],
     ["--repeats", "2", "--loop-points", "21"]),
    ("Peak memory of each algorithm", "benchmarks.memory", ["--repeats", "2"],
     ["--repeats", "1", "--optimizers", "sgd", "--variants", "sam", "sa"]),
    ("First epoch (tracing and compilation) of each rule", "benchmarks.first_epoch",
     ["--models", "transformer", "digits", "--repeats", "3"], ["--quick"]),
    ("Every rule at its defaults, trained from scratch", "benchmarks.defaults",
     ["--seeds", "0", "1", "2", "--jobs", "2"], ["--quick", "--seeds", "0"]),
    ("Flatness per unit of cost", "benchmarks.efficiency", ["--seeds", "0", "1", "2"],
     ["--quick"]),
    # Skips (with a message) each peer not installed: pip install -e ".[peers]".
    ("keras-flat beside its peers", "benchmarks.peers", ["--repeats", "11"],
     ["--repeats", "1", "--steps", "3", "--num-probes", "2", "--iterations", "3"]),
]


def run(module, args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    command = [sys.executable, "-m", module, *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return " ".join(["python", "-m", module, *args]), result.stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"))
    args = parser.parse_args(argv)
    sections = []
    machine = None
    for title, module, full, quick in BENCHMARKS:
        print(f"Running {module} ...", flush=True)
        command, out = run(module, quick if args.quick else full)
        lines = out.splitlines()
        machine = machine or next((line for line in lines if line.startswith("Machine:")), None)
        body = "\n".join(line for line in lines if not line.startswith("Machine:")).strip()
        sections.append(f"## {title}\n\n`{command}`\n\n{body}\n")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        "# Benchmark results\n\n"
        f"Written by `python -m benchmarks{' --quick' if args.quick else ''}` on {stamp}.\n\n"
        f"{machine or 'Machine: unknown'}\n\n"
        "Every number is a ratio to plain Keras training (or to one gradient evaluation) "
        "measured in the same run, interleaving the variants; absolute times on a shared "
        "2-core machine are noisy, ratios less so. See each script's docstring for what "
        "it measures.\n\n" + "\n".join(sections)
    )
    with open(args.output, "w") as f:
        f.write(text)
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
