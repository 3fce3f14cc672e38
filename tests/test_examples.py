"""Each example runs with --quick and reproduces the claim it is about."""

import json
import os

import pytest

from helpers import load_example

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def _outputs(tmp_path, name):
    with open(os.path.join(tmp_path, f"{name}.json")) as f:
        results = json.load(f)
    with open(os.path.join(tmp_path, f"{name}.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.exists(os.path.join(tmp_path, f"{name}.md"))
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
    rows = {r["method"]: r for r in results["rows"]}
    plain = rows["plain SGD"]
    assert plain["train acc"] == 1.0
    assert plain["trace end"] == pytest.approx(plain["trace start"], rel=0.1)  # Plain SGD stays.
    for name in ("RS (Alg. 1)", "SA (Alg. 2)"):
        assert rows[name]["trace end"] < plain["trace end"], name
        assert rows[name]["min train acc"] >= 0.995, name  # Still (almost) every example right.
    # SA escapes faster than RS with a radius twenty times smaller.
    assert rows["SA (Alg. 2)"]["trace end"] < rows["RS (Alg. 1)"]["trace end"]


def test_compare_optimizers_reports_mean_and_spread(tmp_path):
    rows, results = load_example("compare_optimizers").main(["--quick", "--output-dir", str(tmp_path)])
    with open(os.path.join(tmp_path, "compare_optimizers.json")) as f:
        summary = {r["algorithm"].split(",")[0]: r for r in json.load(f)["summary"]}
    assert set(summary) == {"plain SGD", "SAM", "ASAM", "RS (Alg. 1)", "SA (Alg. 2)"}
    assert all(r["runs"] == 2 for r in summary.values())
    assert all(r["hessian_trace_std"] > 0 for r in summary.values())  # Seeds differ.
    for name in ("SAM", "RS (Alg. 1)", "SA (Alg. 2)"):
        assert summary[name]["hessian_trace"] < summary["plain SGD"]["hessian_trace"], name
