"""Second-order measurements on every zoo architecture, against finite differences.

The reference is the Hessian by central differences of the float64 gradient
(first derivatives are exact everywhere, also through normalization layers),
computed with `tf.GradientTape` over `model.stateless_call`, never with
keras_flat. Models are built in float64; measurements run in inference mode
(Dropout off) unless a test says otherwise.
"""

import keras
import numpy as np
import pytest

import keras_flat
from keras_flat import callbacks
from keras_flat import hessian

import zoo

# forward-over-backward cannot pass TensorFlow's recurrent loops.
RECURRENT = tuple(name for name, model in zoo.ZOO.items() if model.recurrent)
CALLBACK_MODELS = [pytest.param(name, marks=pytest.mark.slow) if model.callbacks == "slow"
                   else name for name, model in zoo.ZOO.items() if model.callbacks]


def _setup(name, training=False, n=12, seed=4):
    zoo_model = zoo.ZOO[name]
    with zoo.float64():  # The model, its compiled loss and the reference loss.
        model = zoo.build(name, dropout=0.0 if training else 0.1)
        model.compile(**zoo_model.compile_args())
        losses = zoo_model.losses()
    data = zoo_model.data(n, seed=seed)
    grad = zoo.gradient_function(losses, model, *data, training=training)
    return model, data, grad, zoo.weights_of(model)


def _assert_close(got, want, scale, rtol=1e-6):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=rtol * scale, rtol=0)


@pytest.mark.parametrize("name", zoo.SMALL)
def test_every_measurement_matches_finite_differences(name):
    model, data, grad, w = _setup(name)
    reference = zoo.finite_difference_hessian(grad, w)
    scale = np.abs(reference).max()
    assert scale > 1e-3
    _assert_close(hessian.exact_hessian(model, data), reference, scale)

    v = np.random.default_rng(0).normal(size=reference.shape[0])
    for method in hessian.HVP_METHODS:
        if method == "forward_over_backward" and name in RECURRENT:
            with pytest.raises(ValueError, match=r"method='forward_over_backward' failed.*"
                                                 r"Try hvp_method='double_backward'"):
                hessian.hvp(model, data, v, hvp_method=method)
            continue
        _assert_close(hessian.hvp(model, data, v, hvp_method=method), reference @ v,
                      np.abs(reference @ v).max())

    op = hessian.HessianOperator(model, data)  # method="auto"
    trace = hessian.hessian_trace(op, num_probes=32, seed=1)
    assert abs(trace.value - np.trace(reference)) <= 3 * trace.stderr
    top = hessian.top_eigenvalues(op, num_eigenvalues=1, rtol=1e-6, max_iterations=200)
    assert top.values[0] == pytest.approx(np.linalg.eigvalsh(reference)[-1], rel=1e-3)
    if name in RECURRENT:  # "auto" set forward-over-backward aside and measured anyway.
        assert op.method == "double_backward"
        assert set(op.failures) == {"forward_over_backward"}


def _null_direction(model, paths):
    """A unit vector that moves the named bias vectors (all entries, or a mask)."""
    parts = []
    for v in model.trainable_variables:
        mask = paths.get(v.path)
        parts.append(np.zeros(v.shape) if mask is None else np.broadcast_to(mask, v.shape))
    u = zoo.flatten(parts)
    return u / np.linalg.norm(u)


@pytest.mark.parametrize("case", sorted(zoo.NULL_DIRECTIONS))
def test_hessian_vanishes_along_a_normalization_null_direction(case):
    # Shifting every input of a normalization equally leaves the loss unchanged.
    name, training, paths = zoo.NULL_DIRECTIONS[case]
    model, data, grad, w = _setup(name, training=training)
    u = _null_direction(model, paths)
    v = np.random.default_rng(1).normal(size=u.shape)
    reference_v = zoo.finite_difference_hvp(grad, w, v)
    scale = np.abs(reference_v).max()
    assert np.abs(zoo.finite_difference_hvp(grad, w, u)).max() < 1e-7 * scale  # truly null
    for method in hessian.HVP_METHODS:
        op = hessian.HessianOperator(model, data, hvp_method=method, training=training)
        assert np.abs(op.matvec_flat(u).numpy()).max() < 1e-9 * scale, method
        _assert_close(op.matvec_flat(v).numpy(), reference_v, scale)


@pytest.mark.parametrize("method", hessian.HVP_METHODS)
def test_batchnorm_in_training_mode_matches_finite_differences(method):
    model, data, grad, w = _setup("resnet_block", training=True)
    v = np.random.default_rng(2).normal(size=sum(p.size for p in w))
    reference = zoo.finite_difference_hvp(grad, w, v)
    got = hessian.hvp(model, data, v, hvp_method=method, training=True)
    _assert_close(got, reference, np.abs(reference).max())


@pytest.mark.slow
@pytest.mark.parametrize("training", [False, True])
def test_mobilenet_products_match_finite_differences(training):
    model, data, grad, w = _setup("mobilenet_v3_small", training=training, n=4)
    v = np.random.default_rng(3).normal(size=sum(p.size for p in w))
    reference = zoo.finite_difference_hvp(grad, w, v, step=1e-7)
    for method in hessian.HVP_METHODS:
        got = hessian.hvp(model, data, v, hvp_method=method, training=training)
        _assert_close(got, reference, np.abs(reference).max(), rtol=1e-5)


@pytest.mark.parametrize("name", CALLBACK_MODELS)
def test_callbacks_log_the_finite_difference_trace_and_top_eigenvalue(name):
    zoo_model = zoo.ZOO[name]
    with zoo.float64():
        model = keras_flat.FlatMinimaModel(zoo.build(name, dropout=0.1), zoo.algorithm("sa"),
                                           seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.05), **zoo_model.compile_args())
        losses = zoo_model.losses()
    x, y = zoo_model.data(32, seed=5)
    probe = zoo_model.data(16, seed=6)
    trace = callbacks.HessianTrace(probe, num_probes=16, batch_size=8)
    top = callbacks.TopEigenvalue(probe, num_eigenvalues=1, batch_size=8, rtol=1e-5, max_iterations=100)
    logs = model.fit(x, y, batch_size=16, epochs=1, verbose=0,
                     callbacks=[trace, top]).history
    for key in ("hessian_trace", "hessian_trace_stderr", "top_eigenvalue"):
        assert len(logs[key]) == 1 and np.all(np.isfinite(logs[key])), key
    # The last values are those of the final model on the probe (two batches of 8).
    inner = model.inner
    grad = zoo.gradient_function(losses, inner, *probe, training=False)
    reference = zoo.finite_difference_hessian(grad, zoo.weights_of(inner))
    assert abs(logs["hessian_trace"][-1] - np.trace(reference)) <= 3 * logs[
        "hessian_trace_stderr"][-1]
    assert logs["top_eigenvalue"][-1] == pytest.approx(np.linalg.eigvalsh(reference)[-1],
                                                      rel=1e-3)


def test_the_readme_table_lists_exactly_what_the_zoo_tests():
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.md")) as f:
        readme = f.read()
    assert zoo.readme_table() in readme
