"""The memory benchmark (benchmarks/memory.py): its tables from per-process figures."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import memory  # noqa: E402  (the repository root, for `benchmarks`)

# Per-process figures, in the order `run` asks for them (repeat, optimizer, variant).
_FIGURES = {
    ("plain keras", 0): {"buffers": 3.0, "tensor_buffers": 2.0},
    ("plain keras", 1): {"buffers": 3.4, "tensor_buffers": 2.2},
    ("plain keras", 2): {"buffers": 3.2, "tensor_buffers": 2.1},
    ("rs", 0): {"buffers": 6.0, "tensor_buffers": 2.5},
    ("rs", 1): {"buffers": 5.0, "tensor_buffers": 2.9},
    ("rs", 2): {"buffers": 5.5, "tensor_buffers": 2.6},
}


def _fake_measure(figures):
    calls = {}

    def measure(variant, optimizer, steps):
        n = calls[variant] = calls.get(variant, -1) + 1
        return figures[(variant, n)]

    return measure


def test_rss_and_tensor_tables_are_medians_over_plain_fit(monkeypatch):
    monkeypatch.setattr(memory, "measure", _fake_measure(_FIGURES))
    rss, tensors = memory.run(["sgd"], repeats=3, steps=1, variants=["rs"], key="both")
    # Medians: plain 3.2 and 2.1, rs 5.5 and 2.6.
    assert rss["sgd"]["rs"] == pytest.approx(2.3)
    assert rss["sgd"]["plain keras (absolute)"] == pytest.approx(3.2)
    assert tensors["sgd"]["rs"] == pytest.approx(0.5)
    assert tensors["sgd"]["plain keras (absolute)"] == pytest.approx(2.1)


def test_default_table_is_the_rss_one(monkeypatch):
    monkeypatch.setattr(memory, "measure", _fake_measure(_FIGURES))
    table = memory.run(["sgd"], repeats=3, steps=1, variants=["rs"])
    assert table["sgd"]["rs"] == pytest.approx(2.3)


def test_tensor_table_is_empty_without_allocator_statistics(monkeypatch):
    figures = {k: {"buffers": v["buffers"], "tensor_buffers": None} for k, v in _FIGURES.items()}
    monkeypatch.setattr(memory, "measure", _fake_measure(figures))
    rss, tensors = memory.run(["sgd"], repeats=3, steps=1, variants=["rs"], key="both")
    assert rss["sgd"]["rs"] == pytest.approx(2.3)
    assert tensors["sgd"] == {"rs": None, "plain keras (absolute)": None}
