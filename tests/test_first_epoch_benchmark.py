"""Smoke test of benchmarks/first_epoch.py: its pipeline runs and its bookkeeping is right.

No timing is asserted: the numbers of a shared test machine mean nothing.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `benchmarks` is not an installed package.
    sys.path.insert(0, ROOT)

from benchmarks import first_epoch  # noqa: E402


def test_quick_run_measures_plain_and_sa_and_prints_the_table(capsys):
    # In this process (the real runs use one fresh process per measurement).
    rows = first_epoch.main(["--quick", "--in-process"])
    assert [r["variant"] for r in rows] == ["plain", "sa"]
    for row in rows:
        assert row["model"] == "digits" and row["jit"] is False
        assert 0 < row["first step s"] <= row["first s"]
        assert row["second s"] > 0
    assert rows[0]["first x"] == 1.0 and rows[1]["first x"] > 0
    out = capsys.readouterr().out
    assert "| digits | False | sa |" in out and "First epoch over 2x plain's" in out


def test_every_variant_runs_between_two_plain_runs_in_rotating_order():
    rounds = first_epoch.schedule(["a", "b", "c", "d"], rounds=2, plain_every=3)
    assert rounds[0] == ["plain", "a", "b", "c", "plain", "d", "plain"]
    assert rounds[1] == ["plain", "b", "c", "d", "plain", "a", "plain"]


def test_ratios_divide_by_the_mean_of_the_bracketing_plain_runs():
    sequence = ["plain", "a", "b", "plain", "c", "plain"]
    results = [{"first": 1.0}, {"first": 6.0}, {"first": 3.0}, {"first": 2.0}, None,
               {"first": 4.0}]
    ratios = first_epoch.bracketed_ratios(sequence, results, "first")
    assert ratios == {"a": 4.0, "b": 2.0}  # "c" failed: no ratio.
