"""Loss landscapes: directions, surfaces, interpolation and trajectories, against references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_flat import landscape

from helpers import mlp
from helpers import regression_data
from helpers import v1_model


def _state(*models):
    """Every variable a landscape call could touch: weights, BN statistics, metrics, optimizer."""
    out = {}
    for model in models:
        variables = list(model.variables)
        for metric in model.metrics:
            variables += list(metric.variables)
        if getattr(model, "optimizer", None) is not None and model.optimizer.built:
            variables += list(model.optimizer.variables)
        out.update({id(v): (v, np.array(v.numpy())) for v in variables})
    return out


def _assert_unchanged(before, *models):
    """Bit-identical variables; the only new ones are unbuilt metrics' (at zero)."""
    after = _state(*models)
    assert set(before) <= set(after)
    for key, (variable, value) in before.items():
        np.testing.assert_array_equal(value, after[key][1], err_msg=variable.path)
    metric_ids = {id(v) for m in models for metric in m.metrics for v in metric.variables}
    for key in set(after) - set(before):
        assert key in metric_ids
        np.testing.assert_array_equal(after[key][1], 0.0)


def _bn_mlp(seed, x):
    """An MLP with BatchNorm whose moving statistics differ from the defaults."""
    model = mlp(batchnorm=True, seed=seed)
    model.compile(loss="mse", metrics=["mae"])
    model(x[:2])
    rng = np.random.default_rng(seed)
    bn = model.layers[1]
    bn.moving_mean.assign(rng.normal(size=5) * 0.3)
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=5))
    return model


def test_interpolation_ends_are_the_two_models_and_nothing_changes():
    x, y = regression_data(n=64)
    a, b = _bn_mlp(0, x), _bn_mlp(7, x)
    before = _state(a, b)
    line = landscape.interpolate(a, b, (x, y), resolution=5, extent=(-0.5, 1.5), batch_size=32)
    _assert_unchanged(before, a, b)
    assert set(line.metrics) == {"mae"} and line.kind == "interpolation"
    at = {float(alpha): i for i, alpha in enumerate(line.alphas)}
    for alpha, model in ((0.0, a), (1.0, b)):
        expected = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
        np.testing.assert_allclose(line.loss[at[alpha]], expected["loss"], rtol=1e-6)
        np.testing.assert_allclose(line.metrics["mae"][at[alpha]], expected["mae"], rtol=1e-6)
    # The midpoint is the model whose every weight (BN statistics included) is the average.
    middle = mlp(batchnorm=True)
    middle.compile(loss="mse", metrics=["mae"])
    middle.set_weights([(p + q) / 2 for p, q in zip(a.get_weights(), b.get_weights())])
    expected = middle.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    np.testing.assert_allclose(line.loss[at[0.5]], expected["loss"], rtol=1e-5)
    # Along random directions too, no variable changes.
    before = _state(a)
    dirs = landscape.random_directions(a, num_directions=2, seed=3)
    landscape.surface_1d(a, (x, y), dirs, resolution=3, metrics=True)
    landscape.surface_2d(a, (x, y), dirs, resolution=3, training=True)
    _assert_unchanged(before, a)
    with pytest.raises(ValueError, match="`model_b`"):
        landscape.interpolate(a, mlp(hidden=6), (x, y))


def _layered_model():
    """Every kind of filter: conv, transposed conv, depthwise, einsum, dense, embedding, BN."""
    bias = keras.initializers.RandomNormal(stddev=0.3, seed=9)
    image = keras.Input((6, 6, 2))
    tokens = keras.Input((3,), dtype="int32")
    h = keras.layers.Conv2D(4, 3, bias_initializer=bias)(image)
    h = keras.layers.BatchNormalization(gamma_initializer="random_uniform",
                                        beta_initializer=bias)(h)
    h = keras.layers.Conv2DTranspose(3, 3, bias_initializer=bias)(h)
    h = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, bias_initializer=bias)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.EinsumDense("ab,bcd->acd", output_shape=(2, 3), bias_axes="cd",
                                 bias_initializer=bias)(h)
    h = keras.layers.Flatten()(h)
    e = keras.layers.Flatten()(keras.layers.Embedding(5, 4)(tokens))
    out = keras.layers.Dense(2, bias_initializer=bias)(keras.layers.Concatenate()([h, e]))
    return keras.Model([image, tokens], out)


# The documented filters: axes a filter's norm is taken over, per variable.
_NORM_AXES = {
    ("Conv2D", "kernel"): (0, 1, 2),            # (kh, kw, in, out): an output channel
    ("Conv2DTranspose", "kernel"): (0, 1, 3),   # (kh, kw, out, in): an output channel
    ("DepthwiseConv2D", "kernel"): (0, 1),      # (kh, kw, in, mult): one (in, mult) pair
    ("EinsumDense", "kernel"): (0,),            # (b, c, d), output acd: one (c, d) unit
    ("Embedding", "embeddings"): (1,),          # (vocab, dim): one token's vector
    ("Dense", "kernel"): (0,),                  # (in, out): an output unit
}


def _filter_norms(array, axes):
    return np.sqrt(np.sum(np.asarray(array, np.float64) ** 2, axis=axes))


def test_random_directions_are_filter_normalised():
    model = _layered_model()
    params = landscape.describe_parameters(model)
    weights = [np.array(v) for v in model.trainable_variables]
    dirs = landscape.random_directions(model, num_directions=2, seed=5)
    assert dirs.vectors.shape == (2, sum(w.size for w in weights))
    kinds = {}
    for row in range(2):
        parts = dirs.unflatten(row)
        for p, w, d in zip(params, weights, parts):
            kind = (p.layer, p.name.rsplit("/", 1)[-1])
            kinds[kind] = p.kind
            if kind in _NORM_AXES:
                axes = _NORM_AXES[kind]
                np.testing.assert_allclose(_filter_norms(d, axes), _filter_norms(w, axes),
                                           rtol=1e-6)
            else:  # Biases and BN scale/offset: zero by default.
                assert p.kind in ("bias", "normalization"), kind
                np.testing.assert_array_equal(d, 0.0)
    assert kinds[("BatchNormalization", "gamma")] == "normalization"
    assert kinds[("EinsumDense", "bias")] == "bias"  # Rank 2, named bias.
    assert kinds[("Embedding", "embeddings")] == "embedding"
    # Same seed, same directions; another seed, others.
    np.testing.assert_array_equal(dirs.vectors, landscape.random_directions(model, 2, 5).vectors)
    assert np.abs(dirs.vectors - landscape.random_directions(model, 2, 6).vectors).max() > 0.1
    # Included, each bias or BN vector is one filter with the parameter's norm.
    full = landscape.random_directions(model, num_directions=1, seed=5, include_biases=True,
                                       include_normalization=True)
    for p, w, d in zip(params, weights, full.unflatten(0)):
        if p.kind in ("bias", "normalization"):
            np.testing.assert_allclose(np.linalg.norm(d), np.linalg.norm(w), rtol=1e-6)
    only_biases = landscape.random_directions(model, num_directions=1, seed=5, include_biases=True)
    for p, d in zip(params, only_biases.unflatten(0)):
        if p.kind == "normalization":
            np.testing.assert_array_equal(d, 0.0)
    # Other normalisations: per variable and over the whole included vector.
    per_variable = landscape.random_directions(model, num_directions=1, seed=5, normalization="variable")
    for p, w, d in zip(params, weights, per_variable.unflatten(0)):
        if p.kind in ("weight", "embedding"):
            np.testing.assert_allclose(np.linalg.norm(d), np.linalg.norm(w), rtol=1e-6)
    whole = landscape.random_directions(model, num_directions=1, seed=5, normalization="model")
    included = np.sqrt(sum(np.sum(w.astype(np.float64) ** 2) for p, w in zip(params, weights)
                           if p.kind in ("weight", "embedding")))
    np.testing.assert_allclose(np.linalg.norm(whole.vectors[0].astype(np.float64)), included,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="`normalization`.*'layer'"):
        landscape.random_directions(model, normalization="layer")


def test_same_seed_gives_the_same_draw_rescaled_to_each_models_filters():
    a, b = mlp(seed=0), mlp(seed=11)
    da = landscape.random_directions(a, num_directions=1, seed=2).unflatten(0)[0]
    db = landscape.random_directions(b, num_directions=1, seed=2).unflatten(0)[0]
    na = _filter_norms(np.array(a.trainable_variables[0]), (0,))
    nb = _filter_norms(np.array(b.trainable_variables[0]), (0,))
    np.testing.assert_allclose(da / na, db / nb, rtol=1e-5, atol=1e-7)


def _v1(a, b):
    model = v1_model(a, b)
    model.compile(loss="mse")
    ones = np.ones((8, 1), "float32")
    return model, (ones, ones)


def test_surfaces_on_v1_equal_the_closed_form():
    a0, b0 = 2.0, 0.5
    model, data = _v1(a0, b0)
    before = _state(model)
    plane = landscape.surface_2d(model, data, np.eye(2), extent=((-1.0, 1.0), (-0.5, 1.5)),
                                 resolution=(9, 7))
    _assert_unchanged(before, model)
    alpha, beta = np.meshgrid(plane.alphas, plane.betas)
    assert plane.loss.shape == (7, 9)
    closed = ((a0 + alpha) * (b0 + beta) - 1.0) ** 2  # mse of a·b·1 against 1.
    np.testing.assert_allclose(plane.loss, closed, rtol=1e-5, atol=1e-6)
    # One evaluator runs lines and planes of any size through one traced function.
    evaluator = landscape.Evaluator(model, data)
    line = landscape.surface_1d(evaluator, None, [np.zeros((1, 1)), np.ones((1, 1))],
                                extent=2.0, resolution=9)
    np.testing.assert_allclose(line.loss, (a0 * (b0 + line.alphas) - 1.0) ** 2,
                               rtol=1e-5, atol=1e-6)
    again = landscape.surface_2d(evaluator, None, np.eye(2), extent=((-1.0, 1.0), (-0.5, 1.5)),
                                 resolution=(9, 7))
    np.testing.assert_allclose(again.loss, closed, rtol=1e-5, atol=1e-6)
    assert evaluator.tracing_count() == 1


@pytest.mark.parametrize("a0, b0", [(2.0, 0.5), (1.5, 1.2)], ids=["minimum", "off_minimum"])
def test_curvature_along_the_top_eigenvector_is_the_top_eigenvalue_on_v1(a0, b0):
    model, data = _v1(a0, b0)
    # Closed-form Hessian of (ab - 1)^2.
    hessian = 2.0 * np.array([[b0 ** 2, 2 * a0 * b0 - 1], [2 * a0 * b0 - 1, a0 ** 2]])
    top = np.linalg.eigvalsh(hessian)[-1]
    dirs = landscape.eigen_directions(model, data, num_directions=1, max_iterations=10)
    np.testing.assert_allclose(dirs.values[0], top, rtol=1e-4)
    line = landscape.surface_1d(model, data, dirs, extent=0.2, resolution=21)
    # The loss along a line is a quartic in alpha; its exact fit gives f''(0).
    curvature = 2.0 * np.polyfit(line.alphas, line.loss, 4)[-3]
    np.testing.assert_allclose(curvature, top, rtol=1e-3)


def test_trajectory_pca_matches_numpy_svd_and_the_snapshots():
    from sklearn.decomposition import PCA

    x, y = regression_data(n=64)
    model = mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="mse")
    recorder = landscape.TrajectoryRecorder(every_n_batches=2)
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[recorder])
    snapshots = recorder.weights
    assert snapshots.shape == (1 + 12 // 2, 37)
    np.testing.assert_allclose(recorder.epochs, [0, 0.5, 1, 1.5, 2, 2.5, 3])
    final = np.concatenate([np.array(v).ravel() for v in model.trainable_variables])
    np.testing.assert_array_equal(snapshots[-1], final)
    before = _state(model)
    result = landscape.trajectory_pca(model, (x, y), recorder, resolution=5)
    _assert_unchanged(before, model)
    # Independent references: NumPy's SVD and scikit-learn's PCA of the same matrix.
    moved = snapshots.astype(np.float64) - final
    centred = moved - moved.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(result.explained_variance, s[:2] ** 2 / (len(moved) - 1),
                               rtol=1e-6)
    np.testing.assert_allclose(result.explained_variance_ratio, s[:2] ** 2 / np.sum(s ** 2),
                               rtol=1e-6)
    pca = PCA(n_components=2).fit(moved)
    np.testing.assert_allclose(result.explained_variance_ratio, pca.explained_variance_ratio_,
                               rtol=1e-5)
    d = result.directions.vectors.astype(np.float64)
    np.testing.assert_allclose(d @ d.T, np.eye(2), atol=1e-6)  # Orthonormal.
    np.testing.assert_allclose(np.abs(d @ vt[:2].T), np.eye(2), atol=1e-6)  # Same axes.
    np.testing.assert_allclose(result.coordinates, moved @ d.T, atol=1e-6)
    # The loss at a snapshot is the loss of a model holding those weights.
    probe = mlp()
    probe.compile(loss="mse")
    for i in (0, 3):
        sizes = np.cumsum([w.size for w in probe.get_weights()])[:-1]
        probe.set_weights([p.reshape(w.shape) for p, w in
                           zip(np.split(snapshots[i], sizes), probe.get_weights())])
        expected = probe.evaluate(x, y, batch_size=64, verbose=0)
        np.testing.assert_allclose(result.loss[i], expected, rtol=1e-5)
    # The final weights sit at the origin of the plane, on the surface's grid.
    np.testing.assert_allclose(result.coordinates[-1], 0.0, atol=1e-7)
    assert result.off_plane[-1] == 0.0 and np.all((result.off_plane >= 0) & (result.off_plane <= 1))
    i0 = np.argmin(np.abs(result.surface.alphas))
    j0 = np.argmin(np.abs(result.surface.betas))
    assert result.surface.alphas[i0] != 0.0 or result.surface.betas[j0] != 0.0 or \
        result.surface.loss[j0, i0] == pytest.approx(result.loss[-1], rel=1e-6)
    np.testing.assert_allclose(result.plane_loss[-1], result.loss[-1], rtol=1e-6)


def test_plots_and_csv_files(tmp_path):
    x, y = regression_data(n=32)
    model = mlp()
    model.compile(loss="mse", metrics=["mae"])
    dirs = landscape.random_directions(model, num_directions=2, seed=0)
    line = landscape.surface_1d(model, (x, y), dirs, resolution=5, metrics=True)
    plane = landscape.surface_2d(model, (x, y), dirs, resolution=(4, 3))
    paths = [tmp_path / "line.png", tmp_path / "plane.png"]
    figure = landscape.plot_1d([line, line], paths[0], labels=["a", "b"])
    assert len(figure.axes[0].lines) == 2
    landscape.plot_contour([plane, plane], paths[1], labels=["a", "b"], log_scale=True)
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import csv

    rows = list(csv.DictReader(open(plane.to_csv(tmp_path / "plane.csv"))))
    assert len(rows) == 12 and set(rows[0]) == {"alpha", "beta", "loss"}
    row = rows[1 * 4 + 2]  # beta index 1, alpha index 2
    assert float(row["alpha"]) == plane.alphas[2] and float(row["beta"]) == plane.betas[1]
    assert float(row["loss"]) == plane.loss[1, 2]
    rows = list(csv.DictReader(open(line.to_csv(tmp_path / "line.csv"))))
    assert [float(r["mae"]) for r in rows] == list(line.metrics["mae"])
    with pytest.raises(ValueError, match="`labels`"):
        landscape.plot_1d(line, labels=["a", "b"])


def test_bad_arguments_are_named():
    x, y = regression_data(n=16)
    model = mlp()
    model.compile(loss="mse")
    dirs = landscape.random_directions(model, num_directions=2)
    with pytest.raises(ValueError, match="`directions`.*37"):
        landscape.surface_2d(model, (x, y), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="`directions`.*at least 2"):
        landscape.surface_2d(model, (x, y), dirs.vectors[:1])
    with pytest.raises(ValueError, match="`extent`.*-1"):
        landscape.surface_1d(model, (x, y), dirs, extent=-1)
    with pytest.raises(ValueError, match="`resolution`.*1"):
        landscape.surface_2d(model, (x, y), dirs, resolution=1)
    with pytest.raises(ValueError, match="`data`"):
        landscape.surface_1d(model, None, dirs)
    with pytest.raises(ValueError, match="`num_directions`"):
        landscape.random_directions(model, num_directions=0)
    with pytest.raises(ValueError, match="`trajectory`"):
        landscape.trajectory_pca(model, (x, y), np.zeros((2, 37)))


@pytest.mark.distributed
def test_surfaces_are_the_same_under_a_mirrored_strategy():
    from test_distributed import _strategy

    x, y = regression_data(n=48)
    plain = mlp(batchnorm=True)
    plain.compile(loss="mse", metrics=["mae"])
    plain(x[:2])
    strategy = _strategy()
    with strategy.scope():
        mirrored = mlp(batchnorm=True)
        mirrored.compile(loss="mse", metrics=["mae"])
    mirrored.set_weights(plain.get_weights())
    dirs = landscape.random_directions(plain, num_directions=2, seed=1)
    expected = landscape.surface_2d(plain, (x, y), dirs, resolution=(5, 3), metrics=True,
                                    batch_size=16)
    before = _state(mirrored)
    # Inside the scope the 15 points are divided between the two replicas.
    with strategy.scope():
        split = landscape.surface_2d(mirrored, (x, y), dirs, resolution=(5, 3), metrics=True,
                                     batch_size=16)
    outside = landscape.surface_2d(mirrored, (x, y), dirs, resolution=(5, 3), batch_size=16)
    _assert_unchanged(before, mirrored)
    for got in (split, outside):
        np.testing.assert_allclose(got.loss, expected.loss, rtol=1e-6)
    np.testing.assert_allclose(split.metrics["mae"], expected.metrics["mae"], rtol=1e-6)
    assert tf.distribute.get_strategy() is not strategy
