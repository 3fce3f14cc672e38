"""Flatness callbacks write TensorBoard event files; read them back."""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_hessian import _finite_difference_hessian

from keras_flat import callbacks

from helpers import mlp
from helpers import regression_data


def _read_events(directory):
    """{tag: {step: (value, plugin)}} from every event file, parsed with TensorFlow alone."""
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                out.setdefault(value.tag, {})[event.step] = (
                    array, value.metadata.plugin_data.plugin_name)
    return out


def test_scalars_and_the_spectrum_histogram_are_read_back(tmp_path):
    x, y = regression_data(n=48)
    model = mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    log_dir = str(tmp_path / "logs")
    d = 37
    trace = callbacks.HessianTrace((x, y), num_probes=4, per_layer=True, log_dir=log_dir,
                                   hvp_method="double_backward")
    top = callbacks.TopEigenvalue((x, y), every_n_epochs=2, log_dir=log_dir,
                                  hvp_method="double_backward")
    spectrum = callbacks.HessianSpectrum((x, y), num_probes=2, num_steps=d, buckets=16,
                                         log_dir=log_dir, hvp_method="double_backward")
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
                        callbacks=[trace, top, spectrum]).history
    events = _read_events(os.path.join(log_dir, "flatness"))
    scalar_keys = ["hessian_trace", "hessian_trace_stderr", "hessian_trace_normalized",
                   "hessian_trace/sequential/dense", "hessian_trace/sequential/dense_1",
                   "hessian_spectrum_min", "hessian_spectrum_max"]
    for key in scalar_keys:
        assert sorted(events[key]) == [0, 1], key
        for epoch in (0, 1):
            value, plugin = events[key][epoch]
            assert plugin == "scalars" and value.shape == ()
            assert value == np.float32(history[key][epoch]), key
    # TopEigenvalue measured only at epoch 2 (step 1); the skipped epoch is not written.
    assert np.isnan(history["top_eigenvalue"][0])
    assert list(events["top_eigenvalue"]) == [1]
    assert events["top_eigenvalue"][1][0] == np.float32(history["top_eigenvalue"][1])
    # The histogram is what the callback computed: [left, right, count] rows whose counts
    # are expected eigenvalue numbers, summing to d.
    for epoch in (0, 1):
        buckets, plugin = events["hessian_spectrum"][epoch]
        assert plugin == "histograms" and buckets.shape == (16, 3)
        np.testing.assert_array_equal(buckets, spectrum.histograms[epoch])
        np.testing.assert_allclose(buckets[:, 2].sum(), d, rtol=1e-9)
        np.testing.assert_array_equal(buckets[1:, 0], buckets[:-1, 1])
        assert np.all(buckets[:, 2] >= 0)
    # With d Lanczos steps the extreme nodes are the Hessian's extreme eigenvalues, here
    # against the independent finite-difference Hessian of the final model.
    eigenvalues = np.linalg.eigvalsh(_finite_difference_hessian(model, x, y))
    scale = np.abs(eigenvalues).max()
    assert history["hessian_spectrum_max"][-1] == pytest.approx(eigenvalues[-1], abs=1e-4 * scale)
    assert history["hessian_spectrum_min"][-1] == pytest.approx(eigenvalues[0], abs=1e-4 * scale)
    assert history["top_eigenvalue"][-1] == pytest.approx(eigenvalues[-1], abs=1e-3 * scale)
    # The histogram's mass sits where the eigenvalues are.
    centres = (buckets[:, 0] + buckets[:, 1]) / 2
    assert centres[buckets[:, 2] > 0.01].min() < eigenvalues[0] + 0.2 * scale
    assert centres[buckets[:, 2] > 0.01].max() > eigenvalues[-1] - 0.2 * scale


def test_log_dir_must_be_a_path():
    x, y = regression_data(n=8)
    with pytest.raises(TypeError, match="`log_dir`.*3"):
        callbacks.HessianTrace((x, y), log_dir=3)
    with pytest.raises(ValueError, match="`buckets`"):
        callbacks.HessianSpectrum((x, y), buckets=0)
