"""Every algorithm on every zoo architecture, against steps assembled by hand.

For each zoo model and each algorithm of `zoo.ALGORITHMS`: one `fit` step
(Dropout off) equals the step assembled from gradients computed with
`tf.GradientTape` over `model.stateless_call` and combined in NumPy, with
the offsets and examples the step used read back (`zoo.DrawRecorder`) and
checked (the step runs eagerly in the default suite, compiled in the slow
suite); and `fit` with Dropout on trains to a lower, finite loss. Frozen
weights stay bit-identical throughout.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_flat

import zoo

LR = 0.1
# MobileNetV3Small takes minutes per algorithm on two cores: slow suite only.
NAMES = [pytest.param(n, marks=pytest.mark.slow) if zoo.ZOO[n].slow else n for n in zoo.NAMES]


def _norm(parts):
    return float(np.sqrt(sum(np.sum(np.square(p)) for p in parts)))


def _dot(a, b):
    return float(sum(np.sum(p * q) for p, q in zip(a, b)))


def _project_out(h, g):
    c = _dot(h, g) / _dot(g, g)
    return [a - c * b for a, b in zip(h, g)]


def _take(structure, indices):
    if isinstance(structure, dict):
        return {k: v[indices] for k, v in structure.items()}
    return structure[indices]


def _examples_gradient(zoo_model, inner, x, y):
    """`sub_grad(values, indices)`: the gradient of the chosen examples' mean loss.

    With BatchNorm, the chosen examples keep their place in the whole batch,
    in training mode (normalised by the batch's statistics, through which the
    gradient flows), with zero weight on the others: their share of the batch
    loss. Without it they are gathered and evaluated alone.
    """
    whole = zoo.gradient_function(zoo_model.losses(), inner, x, y, compiled=False)
    size = len(tf.nest.flatten(x)[0])
    cache = {}

    def sub_grad(values, idx):
        if zoo_model.batchnorm:
            weights = np.zeros(size)
            weights[np.asarray(idx)] = size / len(idx)
            return whole(values, weights)[1]
        key = tuple(int(i) for i in idx)
        if key not in cache:
            cache[key] = zoo.gradient_function(
                zoo_model.losses(), inner, _take(x, idx), _take(y, idx), compiled=False)
        return cache[key](values)[1]
    return sub_grad


def reference_update(name, args, variables, w, grad, sub_grad, calls):
    """The gradient the optimizer must receive, assembled from independent gradients."""
    g = grad(w)[1]
    if name == "none":
        assert calls == []
        return g
    if name == "sam":
        eps = [args["rho"] * t / _norm(g) for t in g]
        ((offset, subset),) = calls
        assert subset is None
        np.testing.assert_allclose(zoo.flatten(offset), zoo.flatten(eps), atol=1e-6)
        return grad([a + e for a, e in zip(w, eps)])[1]
    if name == "asam":
        # ASAM rescales kernels, embeddings and scales by |w| + eta, not biases.
        t = [np.ones_like(p) if v.name in ("bias", "beta") else np.abs(p) + args["eta"]
             for v, p in zip(variables, w)]
        tg = [a * b for a, b in zip(t, g)]
        eps = [args["rho"] * a * a * b / _norm(tg) for a, b in zip(t, g)]
        ((offset, _),) = calls
        np.testing.assert_allclose(zoo.flatten(offset), zoo.flatten(eps), atol=1e-6)
        return grad([a + e for a, e in zip(w, eps)])[1]
    if name == "rs":
        ((u, subset),) = calls
        assert subset is None  # The whole batch.
        np.testing.assert_allclose(_norm(u), args["rho"], rtol=1e-5)
        h = grad([a + b for a, b in zip(w, u)])[1]
        return [a + b for a, b in zip(g, _project_out(h, g))]
    if name == "sa":
        (first, indices), (offset, again) = calls
        assert first is None and len(indices) == 1
        np.testing.assert_array_equal(indices, again)
        g_sub = sub_grad(w, indices)
        s = [t / _norm(g_sub) for t in g_sub]
        sign = np.sign(_dot(offset, s))
        np.testing.assert_allclose(zoo.flatten(offset), sign * args["rho"] * zoo.flatten(s),
                                   atol=1e-6)
        h = sub_grad([a + b for a, b in zip(w, offset)], indices)
        return [a + b for a, b in zip(g, _project_out(h, g))]
    raise AssertionError(f"No reference step for algorithm {name!r}: add one here.")


# Plain training ("none") on every zoo model runs in the slow suite.
@pytest.mark.parametrize("algorithm", [
    pytest.param(a, marks=pytest.mark.slow) if a == "none" else a for a in zoo.ALGORITHMS])
@pytest.mark.parametrize("name", NAMES)
def test_each_algorithm_steps_as_assembled_by_hand_and_trains(name, algorithm, monkeypatch):
    # The step run eagerly here: a compiled step costs a trace per model and
    # algorithm, and the training below compiles one. The slow suite checks
    # the compiled step against the same reference.
    check_one_step(name, algorithm, "eager", monkeypatch)
    check_training(name, algorithm)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", zoo.ALGORITHMS)
@pytest.mark.parametrize("name", zoo.NAMES)
def test_the_compiled_step_equals_the_hand_assembled_step(name, algorithm, monkeypatch):
    check_one_step(name, algorithm, "compiled", monkeypatch)


def check_one_step(name, algorithm, mode, monkeypatch):
    """One `fit` step (Dropout off) equals the step assembled by hand."""
    zoo_model = zoo.ZOO[name]
    inner = zoo.build(name, dropout=0.0)
    x, y = zoo_model.data(12, seed=1)
    model = keras_flat.FlatMinimaModel(inner, zoo.algorithm(algorithm), seed=3)
    model.compile(optimizer=keras.optimizers.SGD(LR), run_eagerly=mode == "eager",
                  **zoo_model.compile_args())
    variables = list(inner.trainable_variables)
    recorder = zoo.DrawRecorder(variables)
    w = zoo.weights_of(inner)
    frozen = _frozen_weights(inner)
    frozen_before = [np.array(v) for v in frozen]
    grad = zoo.gradient_function(zoo_model.losses(), inner, x, y, compiled=False)
    sub_grad = _examples_gradient(zoo_model, inner, x, y)

    with monkeypatch.context() as patch:
        recorder.install(patch)
        model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)

    update = reference_update(algorithm, zoo.ALGORITHM_ARGS.get(algorithm, {}), variables, w,
                              grad, sub_grad, recorder.calls())
    expected = [a - LR * u for a, u in zip(w, update)]
    for got, want, v in zip(zoo.weights_of(inner), expected, variables):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5, err_msg=v.path)
    # Frozen variables (a trainable=False backbone) are never written.
    for before, v in zip(frozen_before, frozen):
        np.testing.assert_array_equal(np.array(v), before, err_msg=v.path)


def _frozen_weights(model):
    """Non-trainable weights no training step may change.

    That is every non-trainable variable except the moving statistics of a
    trainable BatchNormalization and the random state of Dropout layers.
    """
    return [v for v in model.variables if not v.trainable and not _batch_statistic(model, v)
            and "seed_generator" not in v.path]


def _batch_statistic(model, variable):
    """Whether `variable` is the moving statistic of a trainable BatchNormalization."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            if any(variable is s for s in (layer.moving_mean, layer.moving_variance)):
                return True
    return False


def _dropout_states(model):
    layers = [layer for layer in model._flatten_layers()
              if isinstance(layer, keras.layers.Dropout) and layer.rate > 0]
    return [np.array(layer.seed_generator.state) for layer in layers]


def check_training(name, algorithm):
    """`fit` with Dropout on reaches a lower, finite loss; frozen weights stay."""
    zoo_model = zoo.ZOO[name]
    inner = zoo.build(name, dropout=0.2)
    x, y = zoo_model.data(96, seed=2)
    model = keras_flat.FlatMinimaModel(inner, zoo.algorithm(algorithm), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.02), **zoo_model.compile_args())
    before = _dropout_states(inner)
    assert before, "every zoo model has Dropout"
    frozen = _frozen_weights(inner)
    frozen_before = [np.array(v) for v in frozen]
    losses = model.fit(x, y, batch_size=16, epochs=5, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < 0.95 * losses[0], losses
    # Dropout was active: its random state advanced during training.
    assert all(np.any(a != b) for a, b in zip(before, _dropout_states(inner)))
    for value, v in zip(frozen_before, frozen):  # A frozen backbone stays as it was.
        np.testing.assert_array_equal(np.array(v), value, err_msg=v.path)


def test_a_tolerance_that_always_perturbs_steps_like_no_tolerance_with_embeddings():
    zoo_model = zoo.ZOO["lstm_text"]
    x, y = zoo_model.data(16, seed=1)
    weights = []
    for tolerance in (None, 1e6):
        inner = zoo.build("lstm_text")
        algorithm = keras_flat.algorithms.RandomSmoothing(rho=0.05, tolerance=tolerance)
        model = keras_flat.FlatMinimaModel(inner, algorithm, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(LR), **zoo_model.compile_args())
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        weights.append(zoo.weights_of(inner))
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("algorithm", [
    keras_flat.algorithms.SAM(rho=0.05, interval=2),
    keras_flat.algorithms.SharpnessAware(rho=0.05, interval=2),
    keras_flat.algorithms.LookSAM(rho=0.05, interval=2),
    keras_flat.algorithms.SAM(rho=0.05, start=1),
], ids=["sam-interval", "sa-interval", "looksam", "sam-start"])
def test_conditional_rules_train_a_model_with_an_embedding(algorithm):
    # The plain branch returns the clean gradient, an Embedding's being
    # tf.IndexedSlices; it once failed to pair with the dense perturbed branch.
    zoo_model = zoo.ZOO["lstm_text"]
    x, y = zoo_model.data(32, seed=1)
    inner = zoo.build("lstm_text")
    model = keras_flat.FlatMinimaModel(inner, algorithm, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(LR), **zoo_model.compile_args())
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert history["perturbed"][0] == 0.5, history
    assert all(np.all(np.isfinite(w)) for w in zoo.weights_of(inner))
