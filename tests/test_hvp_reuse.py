"""Products that share a batch's recorded passes, the compiled loop, incremental Lanczos.

References are central finite differences of the float64 gradient
(`zoo.gradient_function`) and NumPy's `eigh` on dense symmetric matrices,
never the package's own Hessian.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_flat import hessian
from keras_flat.hessian import density
from keras_flat.hessian import eigen
from keras_flat.utils import rng
from keras_flat.utils import vector

import zoo

L = keras.layers


def _model(norm, outputs=3, inputs=4):
    with zoo.float64():
        init = keras.initializers.RandomNormal(stddev=0.5, seed=2)
        model = keras.Sequential([keras.Input((inputs,)), L.Dense(6, bias_initializer=init),
                                  norm(), L.Activation("tanh"), L.Dense(outputs)])
        loss = keras.losses.MeanSquaredError()
        model.compile(loss=loss)
    return model, [(None, loss, 1.0)]


def _data(n=16, inputs=4, outputs=3, seed=3):
    r = np.random.default_rng(seed)
    return r.normal(size=(n, inputs)), r.normal(size=(n, outputs))


CASES = {
    # BatchNorm with batch statistics: one batch (its statistics are the data's).
    "batch_norm_training": (L.BatchNormalization, True, None),
    # LayerNorm over two batches: the products are the example-weighted mean.
    "layer_norm_two_batches": (L.LayerNormalization, False, 8),
}


def _several_products(count):
    """`make` of a compiled function computing `count` products per batch from one recording."""
    def make(traced):
        def run(tangents):
            outs = [None] * count
            for weight, product in traced.per_batch():
                for i in range(count):
                    v = vector.scale(tangents, float(i + 1)) if i % 2 else [
                        tf.reverse(t, [0]) for t in tangents]
                    hv = vector.scale(product(v), weight)
                    outs[i] = hv if outs[i] is None else vector.add(outs[i], hv)
            return [vector.flatten(o) for o in outs]
        return run
    return make


@pytest.mark.parametrize("method", hessian.HVP_METHODS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_products_sharing_a_batch_recording_match_finite_differences(case, method):
    norm, training, batch_size = CASES[case]
    model, losses = _model(norm)
    x, y = _data()
    op = hessian.HessianOperator(model, (x, y), training=training, hvp_method=method,
                                 batch_size=batch_size)
    assert len(op.batches) == (1 if batch_size is None else 2)
    weights = zoo.weights_of(model)
    grad = zoo.gradient_function(losses, model, x, y, training=training)
    u = np.random.default_rng(0).normal(size=op.dimension)
    parts = zoo.unflatten(u, weights)
    got = op._function("three_products", _several_products(3))(
        [tf.constant(p) for p in parts])
    directions = [zoo.flatten([p[::-1] for p in parts]), 2 * u, zoo.flatten(
        [p[::-1] for p in parts])]
    for g, d in zip(got, directions):
        reference = zoo.finite_difference_hvp(grad, weights, d)
        np.testing.assert_allclose(g.numpy(), reference, atol=1e-7 * np.abs(reference).max())


def test_hutchinson_samples_are_each_probes_curvature_whatever_auto_picked():
    # Ten probes: "auto" times both methods on the first eight (two chunks each).
    model, losses = _model(L.BatchNormalization)
    x, y = _data()
    op = hessian.HessianOperator(model, (x, y), training=True)
    estimate = hessian.hessian_trace(op, num_probes=10, seed=5)
    assert op.method in hessian.HVP_METHODS
    assert set(op.timings) == set(hessian.HVP_METHODS)
    assert all(t > 0 for t in op.timings.values())
    weights = zoo.weights_of(model)
    grad = zoo.gradient_function(losses, model, x, y, training=True)
    seed = tf.constant([5, 0], tf.int64)
    for i, sample in enumerate(estimate.samples):
        z = zoo.flatten([t.numpy() for t in vector.rademacher_like(
            model.trainable_variables, rng.fold_in(seed, tf.constant(i)))])
        assert set(np.unique(z)) <= {-1.0, 1.0}
        reference = z @ zoo.finite_difference_hvp(grad, weights, z)
        assert sample == pytest.approx(reference, rel=1e-6, abs=1e-9)


def test_auto_sets_aside_a_failing_method_while_timing_on_probes():
    with zoo.float64():
        model = keras.Sequential([keras.Input((5, 2)), L.LSTM(3), L.Dense(3)])
        loss = keras.losses.MeanSquaredError()
        model.compile(loss=loss)
    r = np.random.default_rng(0)
    x, y = r.normal(size=(8, 5, 2)), r.normal(size=(8, 3))
    op = hessian.HessianOperator(model, (x, y))
    estimate = hessian.hessian_trace(op, num_probes=8, seed=1)
    assert op.method == "double_backward" and "forward_over_backward" in op.failures
    assert list(op.timings) == ["double_backward"]
    grad = zoo.gradient_function([(None, loss, 1.0)], model, x, y, training=False)
    weights = zoo.weights_of(model)
    seed = tf.constant([1, 0], tf.int64)
    for i, sample in enumerate(estimate.samples):
        z = zoo.flatten([t.numpy() for t in vector.rademacher_like(
            model.trainable_variables, rng.fold_in(seed, tf.constant(i)))])
        reference = z @ zoo.finite_difference_hvp(grad, weights, z)
        assert sample == pytest.approx(reference, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("estimator", ["lanczos", "power"])
def test_top_eigenvalues_in_the_compiled_loop_match_the_finite_difference_hessian(estimator):
    model, losses = _model(L.LayerNormalization)
    x, y = _data()
    grad = zoo.gradient_function(losses, model, x, y, training=False)
    reference = zoo.finite_difference_hessian(grad, zoo.weights_of(model))
    values, vectors = np.linalg.eigh(reference)
    order = np.argsort(-np.abs(values)) if estimator == "power" else np.argsort(-values)
    top = values[order][:2]
    result = hessian.top_eigenvalues(model, (x, y), num_eigenvalues=2, estimator=estimator,
                                     max_iterations=3000, rtol=1e-10)
    np.testing.assert_allclose(result.values, top, rtol=1e-5, atol=1e-8 * abs(top[0]))
    for value, v in zip(result.values, result.vectors):
        np.testing.assert_allclose(reference @ v, value * v, atol=1e-4 * abs(top[0]))


def _symmetric(d, seed=0, top=(40.0, 25.0, 12.0)):
    r = np.random.default_rng(seed)
    q, _ = np.linalg.qr(r.normal(size=(d, d)))
    spectrum = np.concatenate([top, r.uniform(-1.0, 1.0, d - len(top))])
    return (q * spectrum) @ q.T


@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("d", [40, 400])
def test_incremental_lanczos_gives_numpys_eigenvalues(d, partial):
    a = _symmetric(d)
    expected = np.linalg.eigvalsh(a)[::-1][:3]
    start = np.random.default_rng(1).normal(size=d)
    values, vectors, used, converged = eigen.drive(
        eigen.lanczos_top_steps(d, 3, d, 1e-10, start, partial=partial), lambda v: a @ v)
    assert converged and used <= d
    np.testing.assert_allclose(values, expected, rtol=1e-10)
    np.testing.assert_allclose(vectors @ vectors.T, np.eye(3), atol=1e-7)
    np.testing.assert_allclose(vectors @ a, values[:, None] * vectors, atol=1e-6)


def test_partial_reorthogonalisation_keeps_the_basis_semi_orthogonal_for_less():
    # A spectrum whose top converges early: full orthogonality would be lost without it.
    d = 600
    a = _symmetric(d, seed=2, top=(100.0, 90.0, 80.0))
    start = np.random.default_rng(3).normal(size=d)
    runs = {}
    for partial in (False, True):
        run = eigen.Lanczos(lambda v: a @ v, start, partial=partial)
        for _ in range(120):
            run.step()
        runs[partial] = run
        basis = run.basis
        assert np.abs(basis @ basis.T - np.eye(len(basis))).max() < np.sqrt(
            np.finfo(float).eps) * 10
        np.testing.assert_allclose(np.linalg.eigvalsh(run.tridiagonal())[-3:],
                                   np.linalg.eigvalsh(a)[-3:], rtol=1e-10)
    assert runs[True].reorthogonalisations < runs[False].reorthogonalisations


def test_an_exhausted_krylov_space_and_a_basis_past_its_capacity():
    a = np.diag([3.0, 3.0, 1.0, 1.0])  # Two distinct eigenvalues: exhausted after 2 steps.
    values, _, used, converged = eigen.lanczos_top(lambda v: a @ v, 4, 3, 50, 1e-8,
                                                   np.ones(4))
    np.testing.assert_allclose(values, [3.0, 1.0])
    assert used == 2 and converged
    run = eigen.Lanczos(None, np.ones(100), capacity=2)  # Grows from 2 rows.
    b = _symmetric(100, seed=4)
    for _ in range(30):
        run.advance(b @ run.vector())
    assert run.basis.shape == (31, 100)
    np.testing.assert_allclose(run.basis @ run.basis.T, np.eye(31), atol=1e-12)


def test_power_iteration_gives_numpys_largest_magnitude_pairs():
    a = _symmetric(60, seed=5, top=(-50.0, 30.0, 5.0))
    values, vectors, used, converged = eigen.power_top(
        lambda v: a @ v, 2, 2000, 1e-12, np.random.default_rng(6).normal(size=(2, 60)))
    assert converged
    np.testing.assert_allclose(values, [-50.0, 30.0], rtol=1e-9)
    np.testing.assert_allclose(vectors @ a, values[:, None] * vectors, atol=1e-5)


def test_quadrature_is_exact_for_polynomials_when_the_krylov_space_is_full():
    # With d steps, Gauss quadrature from unit v integrates vᵀ p(A) v exactly.
    d = 12
    a = _symmetric(d, seed=7, top=(4.0, 3.0, 2.0))
    starts = np.random.default_rng(8).choice([-1.0, 1.0], size=(2, d))
    nodes, weights = density.stochastic_lanczos_quadrature(lambda v: a @ v, d, 2, d, starts)
    for p, start in enumerate(starts):
        v = start / np.linalg.norm(start)
        for power in (1, 2, 3):
            expected = v @ np.linalg.matrix_power(a, power) @ v
            assert np.sum(weights[p] * nodes[p] ** power) == pytest.approx(expected, rel=1e-9)


def test_drive_runs_a_generator_in_the_compiled_loop_and_refuses_anything_else():
    model, losses = _model(L.LayerNormalization)
    x, y = _data()
    op = hessian.HessianOperator(model, (x, y), hvp_method="double_backward")
    weights = zoo.weights_of(model)
    grad = zoo.gradient_function(losses, model, x, y, training=False)
    directions = np.random.default_rng(9).normal(size=(3, op.dimension))

    def steps():
        products = []
        for d in directions:
            products.append(np.array((yield d), np.float64))
        return products

    got = op.drive(steps())
    for d, g in zip(directions, got):
        reference = zoo.finite_difference_hvp(grad, weights, d)
        np.testing.assert_allclose(g, reference, atol=1e-7 * np.abs(reference).max())
    with pytest.raises(TypeError, match=r"Argument `steps` must be a generator.*list"):
        op.drive([directions[0]])
