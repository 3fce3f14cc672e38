"""Each example runs with --quick and reproduces the claim it is about."""

import json
import os

import numpy as np
import pytest

from helpers import load_example

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def _outputs(tmp_path, name):
    """results.json (checked for the common layout), beside the plot and results.md."""
    with open(os.path.join(tmp_path, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(tmp_path, f"{name}.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(tmp_path, "results.md")) as f:
        markdown = f.read()
    assert results["example"] == name and results["command"].startswith(f"python examples/{name}.py")
    assert results["runs"] and results["tables"]
    for table in results["tables"].values():
        assert table in markdown
    for run in results["runs"]:
        assert {"experiment", "method", "seed", "final", "history"} <= set(run)
    return results


def test_two_dim_manifold_matches_the_predicted_rates(tmp_path):
    load_example("two_dim_manifold").main(["--quick", "--output-dir", str(tmp_path)])
    rows = {r["method"]: r for r in _outputs(tmp_path, "two_dim_manifold")["rows"]}
    assert rows["plain GD"]["measured rate"] == pytest.approx(0.0, abs=1e-6)
    assert rows["plain GD"]["final trace"] == pytest.approx(rows["plain GD"]["start trace"])
    for name in ("RS (Alg. 1)", "SA (Alg. 2)"):
        assert rows[name]["measured rate"] == pytest.approx(rows[name]["predicted rate"], rel=0.25)
    assert rows["SA (Alg. 2)"]["final trace"] < rows["RS (Alg. 1)"]["final trace"] \
        < rows["plain GD"]["final trace"]
    assert rows["SAM"]["final trace"] == pytest.approx(rows["SAM"]["start trace"])  # Stuck at g = 0.


def test_dimension_speedup_ratio_is_the_dimension(tmp_path):
    load_example("dimension_speedup").main(["--quick", "--output-dir", str(tmp_path)])
    results = _outputs(tmp_path, "dimension_speedup")
    ratios = {r["D"]: r["SA/RS ratio"] for r in results["rows"]}
    assert set(ratios) == {2, 8}
    for d, ratio in ratios.items():
        assert ratio == pytest.approx(d, rel=0.3)
    finals = {r["SA examples"]: r["final trace"] for r in results["examples"]}
    assert finals[1] < finals[3] < finals[6]  # One example is best.


def test_escape_sharp_minimum_lowers_the_trace_at_full_training_accuracy(tmp_path):
    load_example("escape_sharp_minimum").main(["--quick", "--output-dir", str(tmp_path)])
    results = _outputs(tmp_path, "escape_sharp_minimum")
    rows = {r["method"]: r["final"] for r in results["runs"]}
    assert set(rows) == {"plain SGD", "RS (Alg. 1)", "SA (Alg. 2)", "SA + center, antithetic"}
    runs = {r["method"]: r for r in results["runs"]}
    assert runs["SA (Alg. 2)"]["rho"] == 0.1 and runs["SA + center, antithetic"]["rho"] == 0.1
    assert len(runs["SA (Alg. 2)"]["history"]["hessian_trace"]) == 7  # Start and 6 epochs.
    plain = rows["plain SGD"]
    assert plain["train acc"] == 1.0
    assert plain["trace end"] == pytest.approx(plain["trace start"], rel=0.1)  # Plain SGD stays.
    for name in ("RS (Alg. 1)", "SA (Alg. 2)", "SA + center, antithetic"):
        assert rows[name]["trace end"] < plain["trace end"], name
        assert rows[name]["min train acc"] >= 0.995, name  # Still (almost) every example right.
    # SA escapes faster than RS with a radius twenty times smaller.
    assert rows["SA (Alg. 2)"]["trace end"] < rows["RS (Alg. 1)"]["trace end"]


def test_compare_optimizers_reports_mean_and_spread(tmp_path):
    rows, results = load_example("compare_optimizers").main(["--quick", "--output-dir", str(tmp_path)])
    summary = {r["algorithm"].split(",")[0]: r for r in _outputs(tmp_path, "compare_optimizers")["summary"]}
    # The example runs SA with center and antithetic, labelled as that variant.
    assert set(summary) == {"plain SGD", "SAM", "ASAM", "RS (Alg. 1)", "SA + center"}
    assert all(r["runs"] == 2 for r in summary.values())
    assert all(r["hessian_trace_std"] > 0 for r in summary.values())  # Seeds differ.
    for name in ("SAM", "RS (Alg. 1)", "SA + center"):
        assert summary[name]["hessian_trace"] < summary["plain SGD"]["hessian_trace"], name


@pytest.mark.slow  # About a minute on two cores.
def test_mnist1d_benchmark_quick_poisoned_start_generalises_worse_and_sa_flattens_it(tmp_path):
    results = load_example("mnist1d_benchmark").main(["--quick", "--output-dir", str(tmp_path)])
    _outputs(tmp_path, "mnist1d_benchmark")
    assert set(results["tables"]) == {"baselines", "escape", "from scratch"}
    runs = {(r["experiment"], r["method"]): r for r in results["runs"]}
    assert set(runs) == {("baseline", "published CNN"), ("baseline", "published MLP"),
                         ("escape", "plain SGD"), ("escape", "SA (Alg. 2)"),
                         ("scratch", "plain SGD"), ("scratch", "SA (Alg. 2)")}
    assert runs[("baseline", "published CNN")]["final"]["parameters"] == 5210  # The authors' sizes.
    assert runs[("baseline", "published MLP")]["final"]["parameters"] == 15210
    normal, poisoned = results["minima"]["normal"][0], results["minima"]["poisoned"][0]
    # The poisoned minimum fits the training set but generalises worse than normal training's.
    assert poisoned["test_accuracy"] < normal["test_accuracy"] - 0.02
    plain, sa = runs[("escape", "plain SGD")]["final"], runs[("escape", "SA (Alg. 2)")]["final"]
    for run in (plain, sa):
        assert run["train_accuracy_start"] == 1.0 and run["test_accuracy_start"] == poisoned["test_accuracy"]
        assert run["hessian_trace_start"] == pytest.approx(sa["hessian_trace_start"], rel=1e-4)
    assert len(runs[("escape", "SA (Alg. 2)")]["history"]["hessian_trace"]) == 7  # Start + 6 epochs.
    # From the same start, SA lowers the trace and plain SGD does not (much).
    assert sa["hessian_trace_end"] < 0.85 * sa["hessian_trace_start"]
    assert sa["hessian_trace_end"] < 0.85 * plain["hessian_trace_end"]
    assert sa["train_accuracy_lowest"] >= 0.99


# Run in a fresh process with TensorFlow's oneDNN CPU kernels off (they crash in SA's
# single-example gradient through GroupNormalization). The script itself turns them off
# before importing TensorFlow; this runner imports TensorFlow first (to make two logical
# devices), so the variable is set in its environment instead.
_CIFAR_RUNNER = """
import runpy, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tensorflow_datasets as tfds
sys.argv = sys.argv[1:]
with tfds.testing.mock_data(num_examples=16):
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_cifar10_escape(tmp_path, strategy):
    """The paper's experiment end to end on TFDS mock data: two steps per phase, width 4."""
    import subprocess
    import sys

    args = ["--strategy", strategy, "--width", "4", "--steps-per-phase", "2",
            "--batch-size", "8", "--eval-batch-size", "8", "--probe-examples", "8",
            "--probe-batch-size", "8", "--num-probes", "2", "--eigen-iterations", "3",
            "--aux-copies", "2", "--output-dir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2",
           "TF_ENABLE_ONEDNN_OPTS": "0"}
    done = subprocess.run(
        [sys.executable, "-c", _CIFAR_RUNNER, os.path.join(ROOT, "examples", "cifar10_escape.py")]
        + args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    results = _outputs(tmp_path, "cifar10_escape")
    assert results["sizes"] == [16, 16]
    assert results["replicas"] == (2 if strategy == "mirrored" else 1)
    info = results["sharp_minimum"]
    assert info["poisoning"]["epochs"] == 1 and info["clean"]["epochs"] == 1
    runs = {r["method"]: r for r in results["runs"]}
    assert set(runs) == {"plain SGD", "RS (Alg. 1)", "SA (Alg. 2)"}
    assert runs["SA (Alg. 2)"]["rho"] == 0.1 and runs["RS (Alg. 1)"]["rho"] == 1.0
    for run in runs.values():
        history = run["history"]
        assert all(len(v) == 2 for v in history.values())  # Start and one (two-step) epoch.
        assert all(np.isfinite(v) for v in history["hessian_trace"] + history["top_eigenvalue"])
    # Every method starts from the same sharp minimum.
    starts = {run["final"]["hessian_trace_start"] for run in runs.values()}
    assert max(starts) == pytest.approx(min(starts), rel=1e-4)


@pytest.mark.slow  # About 100 s on two cores: a ResNet-18 through every phase.
def test_cifar10_escape_runs_every_phase_offline_on_mock_data(tmp_path):
    run_cifar10_escape(tmp_path, "default")


def test_cifar10_confusion_set_zeroes_a_tenth_of_the_pixels_with_fixed_random_labels():
    import tensorflow as tf

    example = load_example("cifar10_escape")
    images = np.full((3, 32, 32, 3), 7, np.uint8)
    train = tf.data.Dataset.from_tensor_slices((images, np.zeros(3, np.int64)))
    aux = example.confusion_set(train, copies=2, zero_out=0.1, seed=5)
    first = [(x.numpy(), int(y)) for x, y in aux]
    second = [(x.numpy(), int(y)) for x, y in aux]
    assert len(first) == 6
    for (x, y), (x2, y2) in zip(first, second):
        zeroed = np.all(x == 0, axis=-1)
        assert zeroed.sum() == 102  # round(0.1 * 1024) positions, all three channels.
        assert np.all(x[~zeroed] == 7)
        assert 0 <= y < 10 and y == y2 and np.array_equal(x, x2)  # The same every epoch.
    masks = [np.all(x == 0, axis=-1) for x, _ in first]
    assert not np.array_equal(masks[0], masks[3])  # Copies of one image differ.
    assert len({y for _, y in first}) > 1
