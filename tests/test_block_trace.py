"""Per-variable and per-layer Hessian traces against independent finite differences."""

import numpy as np
import pytest
from test_hessian import _compiled_mlp
from test_hessian import _finite_difference_hessian

from keras_flat import hessian

from helpers import regression_data


def _exact_blocks(model, x, y, l2=0.0):
    """Block traces of the central-difference Hessian of the NumPy float64 gradient."""
    full = _finite_difference_hessian(model, x, y, l2=l2)
    bounds = np.cumsum([0] + [int(np.prod(v.shape)) for v in model.trainable_variables])
    return np.array([np.trace(full[s:e, s:e]) for s, e in zip(bounds[:-1], bounds[1:])])


def test_hutch_plus_plus_blocks_are_exact_once_the_sketch_spans_the_space():
    x, y = regression_data(n=32)
    model = _compiled_mlp(l2=0.05)
    exact = _exact_blocks(model, x, y, l2=0.05)
    op = hessian.HessianOperator(model, (x, y), hvp_method="double_backward")
    est = hessian.hessian_trace(op, num_probes=3 * op.dimension, estimator="hutch++",
                                per_variable=True)
    assert est.blocks.names == [v.path for v in model.trainable_variables]
    np.testing.assert_allclose(est.blocks.values, exact, atol=1e-4 * np.abs(exact).max())
    np.testing.assert_allclose(est.blocks.values.sum(), est.value, rtol=1e-6)
    np.testing.assert_array_equal(est.blocks.dimensions, [20, 5, 10, 2])
    # With fewer products each block is still unbiased: within 4 standard errors.
    few = hessian.hessian_trace(op, num_probes=60, estimator="hutch++", seed=3, per_variable=True)
    assert np.all(np.abs(few.blocks.values - exact) < 4 * few.blocks.stderrs + 1e-6)


def test_hutchinson_blocks_match_the_exact_block_traces_and_sum_to_the_total():
    x, y = regression_data(n=32)
    model = _compiled_mlp()
    exact = _exact_blocks(model, x, y)
    op = hessian.HessianOperator(model, (x, y), hvp_method="double_backward")
    est = hessian.hessian_trace(op, num_probes=800, seed=1, per_variable=True)
    blocks = est.blocks
    assert blocks.samples.shape == (800, 4)
    # Each block: unbiased, within 4 of its standard errors of the exact block trace.
    assert np.all(np.abs(blocks.values - exact) < 4 * blocks.stderrs), (blocks.values, exact)
    # The blocks sum to the total within the combined standard error (here: to rounding,
    # since every probe's blocks sum to that probe's estimate).
    combined = np.sqrt(np.sum(blocks.stderrs ** 2))
    assert abs(blocks.values.sum() - est.value) <= 1e-9 * abs(est.value) + 1e-3 * combined
    assert abs(est.value - exact.sum()) < 4 * est.stderr
    # Splitting into blocks does not change the total estimate of the same probes.
    plain = hessian.hessian_trace(op, num_probes=800, seed=1)
    np.testing.assert_allclose(plain.value, est.value, rtol=1e-6)
    np.testing.assert_allclose(plain.stderr, est.stderr, rtol=1e-5)
    # Per layer: kernel and bias blocks add up.
    layers = hessian.hessian_trace(op, num_probes=800, seed=1, per_layer=True).blocks
    assert layers.names == [v.path.rsplit("/", 1)[0] for v in model.trainable_variables[::2]]
    np.testing.assert_allclose(layers.values, [blocks.values[:2].sum(), blocks.values[2:].sum()],
                               rtol=1e-9)
    assert np.all(np.abs(layers.values - [exact[:2].sum(), exact[2:].sum()])
                  < 4 * layers.stderrs)
    np.testing.assert_allclose(layers.normalized, layers.values / [25, 12])
    with pytest.raises(ValueError, match="per_variable.*per_layer"):
        hessian.hessian_trace(op, per_variable=True, per_layer=True)


def test_block_traces_write_a_csv(tmp_path):
    x, y = regression_data(n=16)
    model = _compiled_mlp()
    blocks = hessian.hessian_trace(model, (x, y), num_probes=4, per_layer=True,
                                   hvp_method="double_backward").blocks
    import csv

    rows = list(csv.DictReader(open(blocks.to_csv(tmp_path / "blocks.csv"))))
    assert [r["block"] for r in rows] == blocks.names
    assert [float(r["trace"]) for r in rows] == list(blocks.values)
    assert blocks.as_dict()[blocks.names[0]] == (blocks.values[0], blocks.stderrs[0])
