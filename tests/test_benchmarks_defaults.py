"""The defaults panel (benchmarks/defaults.py): configuration parsing and a quick run."""

import json
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import defaults  # noqa: E402  (the repository root, for `benchmarks`)


def test_configurations_parse_to_canonical_labels():
    config = defaults.parse_config("SA(center=True, antithetic=True, rho=0.05)")
    assert config.label == "sa(antithetic=True, center=True, rho=0.05)"
    assert defaults.parse_config(config.label) == config
    assert config.algorithm().center and config.algorithm().rho == 0.05
    assert defaults.parse_config("plain").algorithm() is None
    assert defaults.parse_config(" default ").label == "default"
    assert defaults.parse_config("looksam").label == "looksam"


@pytest.mark.parametrize("text", ["nope", "sa(rho=x)", "sa(0.05)", "__import__('os')",
                                  "sa(rho=-1.0)", "plain(rho=1.0)", "sa(**{'rho': 1})"])
def test_bad_configurations_are_refused(text):
    with pytest.raises((ValueError, TypeError)):
        defaults.parse_config(text)


def test_default_list_covers_plain_the_default_and_every_rule():
    labels = [c.label for c in defaults.default_configs()]
    assert labels[:2] == ["plain", "default"]
    assert set(labels[2:]) == set(defaults.algorithms.names()) - {"none"}


def test_quick_panel_reports_every_row_and_resumes(tmp_path):
    argv = ["--quick", "--tasks", "digits_mlp_sgd", "--configs", "plain", "sam",
            "--seeds", "0", "--cache-dir", str(tmp_path), "--label", "smoke",
            "--report", str(tmp_path / "report.md")]
    text = defaults.main(argv)
    with open(tmp_path / "smoke-quick.jsonl") as f:
        records = {r["config"]: r for r in map(json.loads, f)}
    assert set(records) == {"plain", "sam"}
    plain, sam = records["plain"], records["sam"]
    assert plain["test"] > 0.3 and plain["train"] > 0.3  # Chance is 0.1.
    assert plain["perturbed"] is None and sam["perturbed"] == 1.0
    assert plain["initial_weights"] == sam["initial_weights"]
    for r in records.values():
        assert r["steps"] == 30 and r["seconds"] > 0
        assert math.isfinite(r["trace"]) and r["trace"] > 0 and r["trace_stderr"] > 0
    assert "## digits_mlp_sgd" in text and "## Summary" in text
    assert "| plain | " in text and "| sam | " in text
    assert open(tmp_path / "report.md").read() == text
    assert defaults.main(argv) == text  # Resumed from the cache: nothing runs again.
    assert sum(1 for _ in open(os.path.join(tmp_path, "smoke-quick.jsonl"))) == 2
