"""Whole-model vector arithmetic in NumPy, over lists of float64 arrays."""

import numpy as np


def norm(parts):
    return float(np.sqrt(sum(np.sum(np.square(p)) for p in parts)))


def dot(a, b):
    return float(sum(np.sum(p * q) for p, q in zip(a, b)))


def add(a, b, alpha=1.0):
    """`a + alpha·b`."""
    return [p + alpha * q for p, q in zip(a, b)]


def scale(parts, factor):
    return [factor * p for p in parts]


def unit(parts):
    """`parts / ‖parts‖`, zeros for the zero vector."""
    size = norm(parts)
    return scale(parts, 1.0 / size) if size > 0 else [np.zeros_like(p) for p in parts]


def project_out(h, g):
    """`h - (<h, g>/‖g‖²)·g`: `h` without its component along `g` (`h` for a zero `g`)."""
    squares = dot(g, g)
    if squares == 0:
        return list(h)
    return add(h, g, -dot(h, g) / squares)


def flatten(parts):
    return np.concatenate([np.ravel(p) for p in parts])


def assert_close(got, want, what, atol=1e-6, rtol=0.0):
    """Whole-vector comparison with a message naming what is compared."""
    np.testing.assert_allclose(flatten(got), flatten(want), atol=atol, rtol=rtol, err_msg=what)
