"""Renamed arguments: the old names still work, warn, and old saved rules keep their meaning.

AE-SAM's `thresholds` became `threshold_start`/`threshold_end` (a saved pair
is (start, end)), RWP's and ARWP's `alpha` (the clean gradient's weight)
became `perturbed_weight = 1 - alpha`, and GSAM gained `rho_min` (a rule
saved without it had a constant radius). One name, one meaning: GSAM's
`alpha` is `gap_weight`, LookSAM's `k` and `alpha` are `interval` and
`reuse_weight`, ARWP's `eta` and `beta` are `adaptation` and `ema_decay`,
AE-SAM's `decay` is `ema_decay`, and the pieces follow the same names.
"""

import json
import warnings
import zipfile

import keras
import pytest

import keras_flat
from keras_flat import algorithms
from keras_flat.algorithms.pieces.base import Piece

from helpers import mlp
from helpers import regression_data


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return function(*args, **kwargs)


@pytest.mark.parametrize("config, expected", [
    ({"name": "aesam", "rho": 0.1, "decay": 0.8, "thresholds": [-1.0, 1.0],
      "perturbation_sync": "global", "start": None},
     algorithms.AESAM(rho=0.1, ema_decay=0.8, threshold_start=-1.0, threshold_end=1.0)),
    ({"name": "aesam", "rho": 0.1, "decay": 0.8, "thresholds": 0.5,
      "perturbation_sync": "global", "start": None},
     algorithms.AESAM(rho=0.1, ema_decay=0.8, threshold_start=0.5, threshold_end=0.5)),
    ({"name": "rwp", "sigma": 0.02, "alpha": 0.25, "include_offsets": False, "interval": 1,
      "start": None, "perturbation_sync": "global"},
     algorithms.RWP(sigma=0.02, perturbed_weight=0.75)),
    ({"name": "arwp", "sigma": 0.01, "alpha": 0.25, "include_offsets": False, "eta": 0.1,
      "beta": 0.99, "interval": 1, "start": None, "perturbation_sync": "global"},
     algorithms.ARWP(sigma=0.01, perturbed_weight=0.75)),
    ({"name": "arwp", "sigma": 0.01, "perturbed_weight": 0.5, "eta": 0.3, "beta": 0.9},
     algorithms.ARWP(sigma=0.01, adaptation=0.3, ema_decay=0.9)),
    ({"name": "looksam", "rho": 0.1, "k": 3, "alpha": 0.2},
     algorithms.LookSAM(rho=0.1, interval=3, reuse_weight=0.2)),
    ({"name": "gsam", "rho": 0.05, "alpha": 0.1, "interval": 1, "start": None,
      "perturbation_sync": "global"},
     algorithms.GSAM(rho=0.05, gap_weight=0.1, rho_min=0.05)),
])
def test_a_config_saved_with_the_old_names_loads_the_rule_it_described(config, expected):
    loaded = _quiet(algorithms.get, config)
    assert loaded == expected
    assert loaded.pieces() == expected.pieces()


def test_gsam_saved_without_rho_min_keeps_a_constant_radius():
    old = {"name": "gsam", "rho": 0.05, "alpha": 0.1, "interval": 1, "start": None,
           "perturbation_sync": "global"}
    assert algorithms.get(old).pieces()["where"] == algorithms.where.Ascent(0.05)
    assert isinstance(algorithms.GSAM(rho=0.05).pieces()["where"].rho,
                      algorithms.radius.FollowLearningRate)


def test_pieces_saved_with_the_old_names_load_with_their_meaning():
    rule = {"class_name": "Composite", "config": {
        "perturbation_sync": "global",
        "where": keras.saving.serialize_keras_object(algorithms.where.FilterGaussian(0.1)),
        "how": {"module": None, "class_name": "Mix", "config": {"alpha": 0.2},
                "registered_name": "keras_flat>Mix"},
        "when": {"module": None, "class_name": "AdaptiveTrigger",
                 "config": {"decay": 0.9, "thresholds": [-1.0, 1.0]},
                 "registered_name": "keras_flat>AdaptiveTrigger"}}}
    loaded = _quiet(algorithms.get, rule)
    assert loaded.how == algorithms.how.Mix(perturbed_weight=0.8)
    assert loaded.when == algorithms.when.AdaptiveTrigger(0.9, threshold_start=-1.0,
                                                          threshold_end=1.0)


@pytest.mark.parametrize("make, meant", [
    (lambda: algorithms.AESAM(thresholds=(-1.0, 1.0)),
     algorithms.AESAM(threshold_start=-1.0, threshold_end=1.0)),
    (lambda: algorithms.RWP(alpha=0.3), algorithms.RWP(perturbed_weight=0.7)),
    (lambda: algorithms.ARWP(alpha=0.3), algorithms.ARWP(perturbed_weight=0.7)),
    (lambda: algorithms.how.Mix(alpha=0.3), algorithms.how.Mix(0.7)),
    (lambda: algorithms.when.AdaptiveTrigger(thresholds=0.0),
     algorithms.when.AdaptiveTrigger(threshold_start=0.0, threshold_end=0.0)),
])
def test_the_old_names_still_work_and_warn_naming_the_new_one(make, meant):
    with pytest.warns(DeprecationWarning, match="perturbed_weight|threshold_start"):
        built = make()
    assert built == meant


def _plain_renames():
    """Every `(class, old, new)` rename of a registered rule or a piece."""
    classes = [entry.cls for entry in algorithms.registry.entries()]
    classes += [cls for module in (algorithms.when, algorithms.where, algorithms.how)
                for cls in vars(module).values()
                if isinstance(cls, type) and issubclass(cls, Piece)]
    return [(cls, old, new) for cls in classes
            for old, new in vars(cls).get("RENAMED", {}).items() if isinstance(new, str)]


RENAMES = _plain_renames()


def test_the_one_vocabulary_renames_are_declared():
    declared = {(cls.__name__, old, new) for cls, old, new in RENAMES}
    assert {("GSAM", "alpha", "gap_weight"), ("LookSAM", "k", "interval"),
            ("LookSAM", "alpha", "reuse_weight"), ("ARWP", "eta", "adaptation"),
            ("ARWP", "beta", "ema_decay"), ("AESAM", "decay", "ema_decay"),
            ("AddOrthogonal", "scale", "perturbed_lr_scale"),
            ("SurrogateGap", "alpha", "gap_weight"), ("Reuse", "alpha", "reuse_weight"),
            ("FilterGaussian", "eta", "adaptation"), ("FilterGaussian", "beta", "ema_decay"),
            ("AdaptiveTrigger", "decay", "ema_decay")} <= declared


def _required(cls):
    """The arguments `cls` cannot be built without, at a valid value."""
    import inspect
    return {name: 0.1 for name, p in inspect.signature(cls).parameters.items()
            if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD}


@pytest.mark.parametrize("cls, old, new", RENAMES, ids=lambda v: getattr(v, "__name__", v))
def test_each_old_name_warns_and_means_the_new_one(cls, old, new):
    value = 3 if new == "interval" else 0.35
    with pytest.warns(DeprecationWarning, match=f"`{old}` is deprecated.*use `{new}`"):
        built = cls(**_required(cls), **{old: value})
    assert built == cls(**_required(cls), **{new: value})
    assert built.get_config()[new] == value and old not in built.get_config()
    with pytest.raises(TypeError, match=f"`{old}` .*`{new}`"):
        cls(**_required(cls), **{old: value, new: value})


def test_old_and_new_names_together_are_refused():
    with pytest.raises(TypeError, match=r"`alpha` .*`perturbed_weight`"):
        algorithms.RWP(perturbed_weight=0.6, alpha=0.3)
    with pytest.raises(TypeError, match=r"`thresholds` .*`threshold_start`"):
        algorithms.AESAM(threshold_start=0.0, thresholds=0.5)


def test_the_mix_weight_is_no_longer_taken_by_position():
    # RWP(0.01, 0.3) meant alpha=0.3 (the clean gradient's weight): refused, not flipped.
    with pytest.raises(TypeError, match="at most 1 positional argument"):
        algorithms.RWP(0.01, 0.3)


def _rewrite_algorithm(path, edit):
    """Rewrites the algorithm config inside a `.keras` file, as an older version wrote it."""
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    edit(config["config"]["algorithm"]["config"])
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


@pytest.mark.parametrize("rule, edit, expected", [
    (algorithms.AESAM(threshold_start=-1.0, threshold_end=1.0),
     lambda c: c.update(thresholds=[c.pop("threshold_start"), c.pop("threshold_end")]),
     {"threshold_start": -1.0, "threshold_end": 1.0}),
    (algorithms.RWP(perturbed_weight=0.7),
     lambda c: c.update(alpha=1.0 - c.pop("perturbed_weight")),
     {"perturbed_weight": 0.7}),
])
def test_an_old_keras_file_loads_with_the_behaviour_it_was_saved_with(tmp_path, rule, edit,
                                                                      expected):
    x, y = regression_data(n=8)
    model = keras_flat.FlatMinimaModel(mlp(), rule, seed=0)
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "old.keras")
    model.save(path)
    _rewrite_algorithm(path, edit)
    loaded = _quiet(keras.models.load_model, path)
    for key, value in expected.items():
        assert getattr(loaded.algorithm, key) == pytest.approx(value)
    loaded.fit(x, y, epochs=1, verbose=0)
