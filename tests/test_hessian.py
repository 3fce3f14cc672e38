"""Hessian products, trace, eigenvalues and density against independent references.

References: finite differences of an independent NumPy gradient, finite
differences of the float64 gradient of a float64 twin of the model (via
`model.stateless_call`), or closed forms; never the package's own Hessian.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_flat import hessian
from keras_flat.utils import vector

import zoo
from helpers import NumpyMLP
from helpers import mlp
from helpers import regression_data
from helpers import v1_model


def _finite_difference_hessian(model, x, y, l2=0.0, h=1e-5, sample_weight=None):
    """Central differences of the NumPy gradient: independent of TensorFlow."""
    ref = NumpyMLP(l2=l2)
    params = [np.array(v, np.float64) for v in model.trainable_variables]
    shapes = [p.shape for p in params]
    flat = np.concatenate([p.ravel() for p in params])

    def grad(f):
        parts, start = [], 0
        for s in shapes:
            n = int(np.prod(s))
            parts.append(f[start:start + n].reshape(s))
            start += n
        return np.concatenate([g.ravel() for g in ref.grad(parts, x, y, sample_weight)])

    cols = []
    for i in range(len(flat)):
        e = np.zeros_like(flat)
        e[i] = h
        cols.append((grad(flat + e) - grad(flat - e)) / (2 * h))
    return np.array(cols).T


def _compiled_mlp(hidden=5, l2=None, batchnorm=False, inputs=4, outputs=2, loss="mse"):
    reg = keras.regularizers.L2(l2) if l2 else None
    model = mlp(inputs=inputs, hidden=hidden, outputs=outputs, regularizer=reg,
                batchnorm=batchnorm)
    model.compile(loss=loss)
    return model


def _twin_hvp(model, batches, v, training=False):
    """H·v by finite differences of a float64 twin's gradient, batch-size weighted."""
    twin = zoo.float64_twin(model)
    with zoo.float64():
        losses = [(None, keras.losses.MeanSquaredError(), 1.0)]
    total = sum(len(b[0]) for b in batches)
    out = 0.0
    for x, y in batches:
        grad = zoo.gradient_function(losses, twin, x, y, training=training)
        out = out + len(x) / total * zoo.finite_difference_hvp(grad, zoo.weights_of(twin), v)
    return out


def _twin_hessian(model, x, y, training=False):
    """The dense Hessian by finite differences of a float64 twin's gradient."""
    twin = zoo.float64_twin(model)
    with zoo.float64():
        losses = [(None, keras.losses.MeanSquaredError(), 1.0)]
    grad = zoo.gradient_function(losses, twin, x, y, training=training)
    return zoo.finite_difference_hessian(grad, zoo.weights_of(twin))


def _random_vector(op, seed=0):
    return np.random.default_rng(seed).normal(size=op.dimension)


@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_exact_hessian_matches_independent_finite_differences(l2):
    x, y = regression_data(n=32)
    model = _compiled_mlp(l2=l2)
    exact = hessian.exact_hessian(model, (x, y))
    reference = _finite_difference_hessian(model, x, y, l2=l2)
    np.testing.assert_allclose(exact, reference, atol=2e-5 * np.abs(reference).max())


@pytest.mark.parametrize("method", ["forward_over_backward", "double_backward"])
@pytest.mark.parametrize("case", ["plain", "regularized", "batchnorm", "batchnorm_training"])
def test_hvp_matches_finite_differences_times_vector(method, case):
    x, y = regression_data(n=64, inputs=8, outputs=3)
    model = _compiled_mlp(hidden=16, inputs=8, outputs=3, l2=0.01 if case == "regularized" else None,
                          batchnorm=case.startswith("batchnorm"))
    model(x[:2])
    if case.startswith("batchnorm"):  # Non-trivial moving statistics.
        bn = model.layers[1]
        bn.moving_mean.assign(np.linspace(-0.5, 0.5, 16))
        bn.moving_variance.assign(np.linspace(0.5, 2.0, 16))
    training = case == "batchnorm_training"
    data = [(x[:40], y[:40]), (x[40:], y[40:])]  # Two unequal batches.
    op = hessian.HessianOperator(model, data, hvp_method=method, training=training)
    assert 100 < op.dimension < 1000
    before = [np.array(w) for w in model.weights]
    for seed in range(2):
        v = _random_vector(op, seed)
        expected = _twin_hvp(model, data, v, training)
        got = op.matvec_flat(v).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5 * np.linalg.norm(expected))
        parts = vector.unflatten(tf.constant(v, tf.float32), model.trainable_variables)
        as_list = vector.flatten(hessian.hvp(model, data, parts, hvp_method=method,
                                             training=training)).numpy()
        np.testing.assert_allclose(as_list, expected, atol=1e-5 * np.linalg.norm(expected))
    for a, b in zip(before, model.weights):  # Nothing changed, BN stats included.
        np.testing.assert_array_equal(a, np.array(b))


def test_batchnorm_mode_changes_the_hessian():
    x, y = regression_data(n=64)
    model = _compiled_mlp(batchnorm=True)
    model(x[:2])
    traces = {}
    for training in (False, True):
        exact = hessian.exact_hessian(model, (x, y), training=training)
        reference = _twin_hessian(model, x, y, training)
        np.testing.assert_allclose(exact, reference, atol=1e-5 * np.abs(reference).max())
        traces[training] = np.trace(reference)
    assert abs(traces[False] - traces[True]) > 1e-3 * abs(traces[False])


def test_auto_method_picks_one_and_agrees():
    x, y = regression_data(n=64)
    model = _compiled_mlp()
    op = hessian.HessianOperator(model, (x, y))
    assert op.choose_method() in hessian.HVP_METHODS
    assert set(op.timings) == set(hessian.HVP_METHODS) and not op.failures
    v = _random_vector(op)
    np.testing.assert_allclose(op.matvec_flat(v).numpy(),
                               _finite_difference_hessian(model, x, y) @ v, rtol=1e-4, atol=1e-5)


def test_uncompiled_model_with_explicit_loss_and_sample_weights():
    x, y = regression_data(n=32)
    sw = np.linspace(0, 2, 32).astype("float32")
    model = mlp()
    compiled = _compiled_mlp()
    compiled.set_weights(model.get_weights())
    reference = _finite_difference_hessian(model, x, y, sample_weight=sw)
    a = hessian.exact_hessian(model, (x, y, sw), loss=keras.losses.MeanSquaredError())
    b = hessian.exact_hessian(compiled, (x, y, sw))
    for got in (a, b):
        np.testing.assert_allclose(got, reference, atol=2e-5 * np.abs(reference).max())
    assert np.abs(reference - _finite_difference_hessian(model, x, y)).max() > 1e-3


def test_hutchinson_is_unbiased_and_its_error_shrinks_like_one_over_sqrt_probes():
    x, y = regression_data(n=64, inputs=8, outputs=3)
    model = _compiled_mlp(hidden=16, inputs=8, outputs=3)
    op = hessian.HessianOperator(model, (x, y))
    exact = np.trace(_finite_difference_hessian(model, x, y))
    many = hessian.hessian_trace(op, num_probes=1600, seed=1)
    assert many.num_matvecs == 1600 and len(many.samples) == 1600
    assert abs(many.value - exact) < 3 * many.stderr
    np.testing.assert_allclose(many.value, np.mean(many.samples))
    few = hessian.hessian_trace(op, num_probes=100, seed=2)
    assert few.stderr / many.stderr == pytest.approx(4.0, rel=0.25)
    assert many.normalized == pytest.approx(many.value / op.dimension)


def test_hutch_plus_plus_beats_hutchinson_on_a_low_rank_dominated_hessian():
    # Linear least squares: H = 2 XᵀX / n, dominated by 3 large directions.
    rng = np.random.default_rng(0)
    d, n = 40, 400
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
    scales = np.concatenate([[30.0, 20.0, 10.0], np.full(d - 3, 0.3)])
    x = (rng.normal(size=(n, d)) * scales) @ basis.T
    y = rng.normal(size=(n, 1))
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(loss="mse")
    op = hessian.HessianOperator(model, (x.astype("float32"), y.astype("float32")))
    x32 = x.astype("float32").astype(np.float64)
    exact = np.trace(2 * x32.T @ x32 / n)  # Closed form of the mean squared error's Hessian.
    errors = {"hutchinson": [], "hutch++": []}
    for seed in range(8):
        for method in errors:
            est = hessian.hessian_trace(op, num_probes=12, estimator=method, seed=seed)
            errors[method].append((est.value - exact) ** 2)
    rmse = {m: np.sqrt(np.mean(e)) for m, e in errors.items()}
    assert rmse["hutch++"] < 0.2 * rmse["hutchinson"]


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_top_eigenvalues_match_the_exact_ones(method):
    x, y = regression_data(n=64, inputs=8, outputs=3)
    model = _compiled_mlp(hidden=16, inputs=8, outputs=3, l2=0.01)
    op = hessian.HessianOperator(model, (x, y))
    eigenvalues = np.linalg.eigvalsh(_finite_difference_hessian(model, x, y, l2=0.01))
    k = 3 if method == "lanczos" else 1
    result = hessian.top_eigenvalues(op, num_eigenvalues=k, estimator=method, max_iterations=300, rtol=1e-6)
    expected = eigenvalues[::-1][:k] if method == "lanczos" else \
        eigenvalues[np.argsort(-np.abs(eigenvalues))][:1]
    np.testing.assert_allclose(result.values, expected, rtol=1e-3)
    assert result.converged
    # The vectors are eigenvectors: H u = λ u.
    for value, u in zip(result.values, result.vectors):
        hu = op.matvec_flat(u).numpy()
        assert np.linalg.norm(hu - value * u) < 1e-2 * abs(value)


def test_warm_start_needs_fewer_products():
    x, y = regression_data(n=64, inputs=8, outputs=3)
    model = _compiled_mlp(hidden=16, inputs=8, outputs=3)
    op = hessian.HessianOperator(model, (x, y))
    cold = hessian.top_eigenvalues(op, num_eigenvalues=1, rtol=1e-4, max_iterations=200)
    warm = hessian.top_eigenvalues(op, num_eigenvalues=1, rtol=1e-4, max_iterations=200,
                                   initial_vectors=cold.vectors)
    assert warm.iterations < cold.iterations
    np.testing.assert_allclose(warm.values, cold.values, rtol=1e-3)


def test_spectral_density_integrates_to_one_where_the_eigenvalues_are():
    x, y = regression_data(n=64, inputs=8, outputs=3)
    model = _compiled_mlp(hidden=16, inputs=8, outputs=3)
    op = hessian.HessianOperator(model, (x, y))
    eigenvalues = np.linalg.eigvalsh(_finite_difference_hessian(model, x, y))
    result = hessian.spectral_density(op, num_probes=32, num_steps=40, grid_size=2000)
    integrate = getattr(np, "trapezoid", None) or np.trapz
    assert integrate(result.density, result.grid) == pytest.approx(1.0, abs=1e-6)
    assert np.all(result.density >= 0)
    np.testing.assert_allclose(result.weights.sum(axis=1), 1.0, rtol=1e-6)
    # Each probe's quadrature mean is its Rayleigh quotient, an unbiased
    # estimate of tr(H)/d; the extremes of the nodes are H's extremes.
    per_probe = np.sum(result.nodes * result.weights, axis=1)
    assert result.mean() == pytest.approx(per_probe.mean())
    stderr = per_probe.std(ddof=1) / np.sqrt(len(per_probe))
    assert abs(result.mean() - eigenvalues.mean()) < 4 * stderr
    assert result.nodes.max() == pytest.approx(eigenvalues.max(), rel=1e-3)
    # Mass sits where the eigenvalues are: compare the distribution functions.
    cdf_exact = np.searchsorted(np.sort(eigenvalues), result.grid, side="right") / len(eigenvalues)
    cdf_slq = np.concatenate([[0], np.cumsum((result.density[1:] + result.density[:-1]) / 2
                                             * np.diff(result.grid))])
    assert np.max(np.abs(cdf_slq - cdf_exact)) < 0.25
    width = result.grid[-1] - result.grid[0]
    assert integrate(np.abs(cdf_slq - cdf_exact), result.grid) < 0.03 * width


@pytest.mark.compat
@pytest.mark.parametrize("a, b", [(2.0, 0.5), (1.0, 1.0), (0.3, 2.5), (1.5, -0.2)])
def test_v1_trace_equals_the_closed_form(a, b):
    # f(a, b) = (ab - 1)^2: tr ∇²f = 2(a² + b²) at every point.
    model = v1_model(a, b)
    model.compile(loss="mse")
    data = (np.ones((1, 1), "float32"), np.ones((1, 1), "float32"))
    closed_form = 2 * (a * a + b * b)
    assert np.trace(hessian.exact_hessian(model, data)) == pytest.approx(closed_form, rel=1e-5)
    # In two dimensions Hutch++ with 6 products sketches the whole space: exact.
    plus = hessian.hessian_trace(model, data, num_probes=6, estimator="hutch++")
    assert plus.value == pytest.approx(closed_form, rel=1e-4)
    est = hessian.hessian_trace(model, data, num_probes=400, seed=3)
    assert abs(est.value - closed_form) <= 3 * est.stderr + 1e-6 * closed_form
    # Rademacher probes in 2-D: z'Hz = tr ± 2 H12, so the mean of many is tr.
    assert est.value == pytest.approx(closed_form, rel=0.1)


def test_bad_input_fails_with_a_clear_error():
    x, y = regression_data(n=16)
    model = _compiled_mlp()
    with pytest.raises(ValueError, match=r"`num_probes`.*0"):
        hessian.hessian_trace(model, (x, y), num_probes=0)
    with pytest.raises(ValueError, match=r"`num_probes`.*2"):
        hessian.hessian_trace(model, (x, y), num_probes=2, estimator="hutch++")
    with pytest.raises(ValueError, match=r"`data` is empty"):
        hessian.hessian_trace(model, (x[:0], y[:0]))
    with pytest.raises(ValueError, match=r"`data` is empty"):
        hessian.hessian_trace(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(4).take(0))
    with pytest.raises(ValueError, match=r"`num_eigenvalues`.*0"):
        hessian.top_eigenvalues(model, (x, y), num_eigenvalues=0)
    with pytest.raises(ValueError, match=r"`estimator`.*'hutchinsons'"):
        hessian.hessian_trace(model, (x, y), estimator="hutchinsons")
    with pytest.raises(ValueError, match=r"`estimator`.*'arnoldi'"):
        hessian.top_eigenvalues(model, (x, y), estimator="arnoldi")
    with pytest.raises(ValueError, match=r"`hvp_method`.*'finite'"):
        hessian.hvp(model, (x, y), [tf.zeros_like(v) for v in model.trainable_variables],
                    hvp_method="finite")
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    unbuilt.compile(loss="mse")
    with pytest.raises(ValueError, match=r"`model`.*has not been built"):
        hessian.hessian_trace(unbuilt, (x, y))
    uncompiled = mlp()
    with pytest.raises(ValueError, match="no loss"):
        hessian.hessian_trace(uncompiled, (x, y))
    with pytest.raises(TypeError, match=r"`data`.*str"):
        hessian.hessian_trace(model, "data.csv")
    with pytest.raises(ValueError, match=r"infinite"):
        hessian.hessian_trace(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat())
    with pytest.raises(ValueError, match=r"`vectors` must hold 4 tensors"):
        hessian.hvp(model, (x, y), [tf.zeros((4, 5))])
