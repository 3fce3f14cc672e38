"""The examples' full default runs reproduce the paper's claims (slow: ~10 min).

Run with `pytest -m slow`.
"""

import os

import pytest

from helpers import load_example

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def test_full_two_dim_manifold(tmp_path):
    rows = {r["method"]: r for r in load_example("two_dim_manifold").main(["--output-dir", str(tmp_path)])}
    for name in ("RS (Alg. 1)", "SA (Alg. 2)"):
        assert rows[name]["measured rate"] == pytest.approx(rows[name]["predicted rate"], rel=0.1)
        assert rows[name]["final trace"] == pytest.approx(4.0, rel=0.02)  # The flattest minimum.


def test_full_dimension_speedup(tmp_path):
    rows, finals = load_example("dimension_speedup").main(["--output-dir", str(tmp_path)])
    for row in rows:
        assert row["SA/RS ratio"] == pytest.approx(row["D"], rel=0.3)
    finals = {r["SA examples"]: r["final trace"] for r in finals}
    assert finals[1] < finals[3] < finals[6]


def test_full_escape_sharp_minimum(tmp_path):
    rows, reference = load_example("escape_sharp_minimum").main(["--output-dir", str(tmp_path)])
    rows = {r["method"]: r for r in rows}
    assert rows["plain SGD"]["train acc"] == 1.0
    assert rows["SA (Alg. 2)"]["trace end"] < rows["RS (Alg. 1)"]["trace end"] \
        < rows["plain SGD"]["trace end"]
