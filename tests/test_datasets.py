"""MNIST-1D is generated locally, equals the published file, and touches no network."""

import random
import socket
import sys

import numpy as np
import pytest

from keras_flat.app import datasets

# Fingerprints of the published file mnist1d_data.pkl (github.com/greydanus/mnist1d),
# read from that file, not from this package.
PUBLISHED_Y_TRAIN_HEAD = [2, 6, 4, 5, 6, 6, 6, 0, 3, 1, 6, 9, 4, 3, 4, 5, 1, 9, 0, 3]
PUBLISHED_Y_TEST_HEAD = [2, 6, 3, 9, 4, 3, 1, 9, 5, 2, 0, 7, 7, 1, 4, 6, 1, 4, 3, 9]
PUBLISHED_TRAIN_COUNTS = [398, 396, 411, 394, 394, 402, 401, 404, 402, 398]
PUBLISHED_TEST_COUNTS = [102, 104, 89, 106, 106, 98, 99, 96, 98, 102]
PUBLISHED_X0_HEAD = [-0.3320056673693902, -0.4719103656557236, -0.778697076293495,
                     -1.0097408265367047, -0.8823525654053074]
PUBLISHED_XTEST0_HEAD = [-0.07877078047732886, -0.21073170588642925, -0.09175138109239452,
                         0.28267111736736455, 0.3260581534953046]
PUBLISHED_ABS_SUM_X = 118338.29510719894


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_default_mnist1d_is_the_published_dataset_built_offline(no_network):
    numpy_state, python_state = np.random.get_state(), random.getstate()
    data = datasets.load("mnist1d")
    assert data.name == "mnist1d" and data.num_classes == 10
    assert data.x_train.shape == (4000, 40) and data.x_test.shape == (1000, 40)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.y_train[:20].tolist() == PUBLISHED_Y_TRAIN_HEAD
    assert data.y_test[:20].tolist() == PUBLISHED_Y_TEST_HEAD
    assert np.bincount(data.y_train).tolist() == PUBLISHED_TRAIN_COUNTS
    assert np.bincount(data.y_test).tolist() == PUBLISHED_TEST_COUNTS
    np.testing.assert_allclose(data.x_train[0, :5], PUBLISHED_X0_HEAD, rtol=1e-6)
    np.testing.assert_allclose(data.x_test[0, :5], PUBLISHED_XTEST0_HEAD, rtol=1e-6, atol=1e-7)
    assert np.abs(data.x_train.astype(np.float64)).sum() == pytest.approx(
        PUBLISHED_ABS_SUM_X, rel=1e-6)
    # The generator seeds NumPy's and Python's global state; the caller's is restored.
    after_numpy = np.random.get_state()
    assert after_numpy[0] == numpy_state[0] and np.array_equal(after_numpy[1], numpy_state[1])
    assert after_numpy[2:] == numpy_state[2:]
    assert random.getstate() == python_state
    # Same arguments, same data: mnist1d() is what load("mnist1d") returns.
    direct = datasets.mnist1d(sequence_shape=True)
    assert direct.x_train.shape == (4000, 40, 1)
    np.testing.assert_array_equal(direct.x_train[..., 0], data.x_train)


def test_mnist1d_takes_sample_count_seed_and_split(no_network):
    small = datasets.mnist1d(num_samples=500, seed=1, test_fraction=0.4)
    assert small.x_train.shape == (300, 40) and small.x_test.shape == (200, 40)
    other = datasets.mnist1d(num_samples=500, seed=2, test_fraction=0.4)
    assert not np.allclose(small.x_train, other.x_train)
    assert np.bincount(np.concatenate([small.y_train, small.y_test])).tolist() == [50] * 10
    loaded = datasets.load("mnist1d", seed=1, test_fraction=0.25, image_shape=True, limit=10)
    assert loaded.x_train.shape == (10, 40, 1)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_samples": 15}, r"`num_samples`.*multiple of 10.*15"),
    ({"num_samples": 0}, r"`num_samples`.*>= 10.*0"),
    ({"seed": -1}, r"`seed`.*>= 0.*-1"),
    ({"test_fraction": 1.0}, r"`test_fraction`.*\(0, 1\).*1.0"),
    ({"num_samples": 10, "test_fraction": 0.95}, r"`test_fraction`.*non-empty.*0.95"),
])
def test_mnist1d_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        datasets.mnist1d(**kwargs)


def test_mnist1d_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match=r'keras-flat\[datasets\]'):
        datasets.load("mnist1d")


def test_split_arguments_are_refused_for_datasets_with_their_own_split():
    with pytest.raises(ValueError, match=r"own train/test split.*seed=3"):
        datasets.load("mnist", seed=3)
