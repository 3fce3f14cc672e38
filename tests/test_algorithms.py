"""Algorithm registry, configs and construction-time validation."""

import math

import keras
import numpy as np
import pytest

import keras_flat
from keras_flat import algorithms

from helpers import mlp

ALL = [
    algorithms.NoPerturbation(),
    algorithms.RandomSmoothing(rho=0.3, tolerance=1e-3, perturbed_lr_scale=2.0,
                               project=False, antithetic=True, perturbation_sync="replica",
                               interval=3),
    algorithms.SharpnessAware(rho=0.1, tolerance=0.5, perturbed_lr_scale=0.5,
                              project=True, examples=3, jitter=1e-4, center=True,
                              antithetic=True),
    algorithms.SAM(rho=0.07, interval=4),
    algorithms.ASAM(rho=0.9, eta=0.02),
]


@pytest.mark.parametrize(
    "name, cls",
    [("rs", algorithms.RandomSmoothing), ("random_smoothing", algorithms.RandomSmoothing),
     ("sa", algorithms.SharpnessAware), ("sharpness_aware", algorithms.SharpnessAware),
     ("sam", algorithms.SAM), ("asam", algorithms.ASAM), ("none", algorithms.NoPerturbation),
     (None, algorithms.NoPerturbation), ("SAM", algorithms.SAM),
     ("Random-Smoothing", algorithms.RandomSmoothing)],
)
def test_get_by_name(name, cls):
    assert type(algorithms.get(name)) is cls


def test_get_passes_arguments_and_returns_instances_unchanged():
    sa = algorithms.get("sa", rho=0.2, examples=4)
    assert (sa.rho, sa.examples) == (0.2, 4)
    assert algorithms.get(sa) is sa


@pytest.mark.parametrize("algorithm", ALL, ids=lambda a: type(a).__name__)
def test_config_roundtrip(algorithm):
    config = algorithm.get_config()
    assert type(algorithm).from_config(config) == algorithm
    serialized = algorithms.serialize(algorithm)
    rebuilt = algorithms.get(serialized)
    assert rebuilt == algorithm and rebuilt is not algorithm
    assert algorithms.get({"class_name": type(algorithm).__name__, "config": config}) == algorithm
    assert keras.saving.deserialize_keras_object(serialized) == algorithm


def test_defaults_match_the_documented_ones():
    assert algorithms.SAM().rho == 0.05
    asam = algorithms.ASAM()
    assert (asam.rho, asam.eta) == (0.5, 0.01)
    rs = algorithms.RandomSmoothing(0.1)
    assert (rs.tolerance, rs.perturbed_lr_scale, rs.project) == (None, 1.0, True)
    assert algorithms.SharpnessAware(0.1).examples == 1
    assert rs.perturbation_sync == "global"
    assert rs.interval == algorithms.SAM().interval == algorithms.ASAM().interval == 1


@pytest.mark.parametrize(
    "factory, argument, value, error",
    [
        (algorithms.RandomSmoothing, "rho", -0.1, ValueError),
        (algorithms.RandomSmoothing, "rho", math.inf, ValueError),
        (algorithms.RandomSmoothing, "rho", math.nan, ValueError),
        (algorithms.SharpnessAware, "rho", "big", TypeError),
        (algorithms.SAM, "rho", -1.0, ValueError),
        (algorithms.ASAM, "rho", math.nan, ValueError),
        (algorithms.ASAM, "eta", -0.01, ValueError),
        (algorithms.RandomSmoothing, "tolerance", -1e-3, ValueError),
        (algorithms.SharpnessAware, "tolerance", math.nan, ValueError),
        (algorithms.RandomSmoothing, "perturbed_lr_scale", 0.0, ValueError),
        (algorithms.SharpnessAware, "perturbed_lr_scale", -2.0, ValueError),
        (algorithms.SharpnessAware, "examples", 0, ValueError),
        (algorithms.SharpnessAware, "examples", 1.5, TypeError),
        (algorithms.RandomSmoothing, "project", "yes", TypeError),
        (algorithms.SharpnessAware, "center", 1, TypeError),
        (algorithms.RandomSmoothing, "antithetic", None, TypeError),
        (algorithms.SharpnessAware, "jitter", -1e-3, ValueError),
        (algorithms.SAM, "perturbation_sync", "sometimes", ValueError),
        (algorithms.SAM, "interval", 0, ValueError),
        (algorithms.ASAM, "interval", 2.5, TypeError),
        (algorithms.RandomSmoothing, "interval", -1, ValueError),
        (algorithms.SharpnessAware, "interval", "2", TypeError),
    ],
)
def test_bad_arguments_fail_at_construction_naming_argument_and_value(
    factory, argument, value, error
):
    with pytest.raises(error) as info:
        factory(**{argument: value})
    message = str(info.value)
    assert f"`{argument}`" in message
    assert repr(value) in message


def test_unknown_names_and_types_are_rejected():
    with pytest.raises(ValueError, match="Unknown algorithm.*'adam'"):
        algorithms.get("adam")
    with pytest.raises(TypeError, match="algorithm=3"):
        algorithms.get(3)
    with pytest.raises(ValueError, match="Unknown algorithm class 'Nope'"):
        algorithms.get({"class_name": "Nope", "config": {}})
    with pytest.raises(ValueError, match="only be given with an algorithm name"):
        algorithms.get(algorithms.SAM(), rho=0.1)
    with pytest.raises(ValueError, match="Invalid config"):
        algorithms.get({"class_name": "SAM", "config": {"radius": 1.0}})


def test_flat_minima_model_validates_its_arguments_before_anything_is_built():
    inner = mlp()
    before = [np.array(w) for w in inner.get_weights()]
    with pytest.raises(TypeError, match="Argument `model` must be a keras.Model.*Dense"):
        keras_flat.FlatMinimaModel(keras.layers.Dense(2))
    with pytest.raises(TypeError, match="model=.*ndarray"):
        keras_flat.FlatMinimaModel(np.zeros(3))
    with pytest.raises(ValueError, match="Unknown algorithm.*'sgd'"):
        keras_flat.FlatMinimaModel(inner, "sgd")
    with pytest.raises(ValueError, match=r"`rho`.*-0\.5"):
        keras_flat.FlatMinimaModel(inner, "rs", rho=-0.5)
    with pytest.raises(ValueError, match=r"`examples`.*0"):
        keras_flat.FlatMinimaModel(inner, "sa", examples=0)
    with pytest.raises(ValueError, match=r"`perturbed_lr_scale`.*0\.0"):
        keras_flat.FlatMinimaModel(inner, "sa", perturbed_lr_scale=0.0)
    with pytest.raises(ValueError, match=r"`tolerance`.*-1"):
        keras_flat.FlatMinimaModel(inner, "rs", tolerance=-1)
    with pytest.raises(ValueError, match=r"`seed`.*-3"):
        keras_flat.FlatMinimaModel(inner, "rs", seed=-3)
    with pytest.raises(TypeError, match="unknown argument `radius`. Did you mean `rho`"):
        keras_flat.FlatMinimaModel(inner, "rs", radius=0.1)
    # Nothing was half-applied to the wrapped model.
    for a, b in zip(before, inner.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_model_accepts_names_instances_and_configs():
    inner = mlp()
    m = keras_flat.FlatMinimaModel(inner, "sa", rho=0.2, examples=2, seed=3)
    assert m.algorithm == algorithms.SharpnessAware(rho=0.2, examples=2)
    assert m.inner is inner
    m = keras_flat.FlatMinimaModel(inner, algorithms.serialize(algorithms.SAM(0.1)))
    assert m.algorithm == algorithms.SAM(0.1)
    assert keras_flat.FlatMinimaModel(inner).algorithm == algorithms.AESAM(
        rho=0.05, threshold_start=0.0, threshold_end=0.0)
    assert algorithms.get("Default", rho=0.1) == algorithms.AESAM(
        rho=0.1, threshold_start=0.0, threshold_end=0.0)
    assert isinstance(keras_flat.FlatMinimaModel(inner, None).algorithm, algorithms.NoPerturbation)
