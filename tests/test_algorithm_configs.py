"""An algorithm's `get_config()` is accepted back wherever a config dict is.

Every config records which rule it is under `"name"` (the registered name,
as a Keras optimizer's config records `"adam"`), so `algorithms.get` and
`FlatMinimaModel` build the same rule from it. Configs written before the
key existed (today's `.keras` files) still load.
"""

import json
import zipfile

import keras
import numpy as np
import pytest

import keras_flat
from keras_flat import algorithms
from keras_flat.algorithms import registry
from keras_flat.algorithms.pieces import how
from keras_flat.algorithms.pieces import when
from keras_flat.algorithms.pieces import where

from helpers import mlp
from helpers import regression_data
from reference import arguments as rule_arguments

NAMES = algorithms.names()


def _rule(name):
    return rule_arguments.build(registry.entry(name))


def _late_gsam():
    return algorithms.Composite(where=where.Ascent(0.2), how=how.SurrogateGap(0.3),
                                when=when.AllOf([when.Every(2), when.StartingAt(1)]))


def _without_name(config):
    return {k: v for k, v in config.items() if k != "name"}


@pytest.mark.parametrize("name", NAMES)
def test_get_config_records_the_registered_name_and_builds_the_rule_again(name):
    original = _rule(name)
    config = original.get_config()
    assert config["name"] == name
    rebuilt = algorithms.get(config)
    assert type(rebuilt) is type(original) and rebuilt == original and rebuilt is not original
    assert keras_flat.FlatMinimaModel(mlp(), algorithm=config).algorithm == original


def test_a_composite_config_round_trips_with_its_nested_pieces():
    rule = _late_gsam()
    config = rule.get_config()
    assert config["name"] == "keras_flat>Composite"
    rebuilt = algorithms.get(config)
    assert rebuilt == rule and rebuilt.pieces() == rule.pieces()
    x, y = regression_data(n=32)
    weights = []
    for algorithm in (rule, rebuilt):
        model = keras_flat.FlatMinimaModel(mlp(), algorithm, seed=3)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        weights.append([np.array(v) for v in model.inner.weights])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_a_config_saved_before_the_name_was_recorded_still_loads():
    # What `serialize(SAM(rho=0.1))` and a FlatMinimaModel's config held until now.
    old = {"module": "keras_flat.algorithms.sam", "class_name": "SAM",
           "config": {"perturbation_sync": "global", "rho": 0.1, "interval": 1, "start": None},
           "registered_name": "keras_flat>SAM"}
    assert algorithms.get(old) == algorithms.SAM(rho=0.1)
    assert algorithms.SAM.from_config(old["config"]) == algorithms.SAM(rho=0.1)
    model = keras_flat.FlatMinimaModel(mlp(), "sam", seed=4)
    config = model.get_config()
    config["algorithm"] = old
    assert keras_flat.FlatMinimaModel.from_config(config).algorithm == algorithms.SAM(rho=0.1)
    for name in NAMES:  # Every rule, its config as it was built before.
        serialized = algorithms.serialize(_rule(name))
        serialized["config"] = _without_name(serialized["config"])
        assert algorithms.get(serialized) == _rule(name)
    composite = algorithms.serialize(_late_gsam())
    composite["config"] = _without_name(composite["config"])
    assert algorithms.get(composite) == _late_gsam()


@pytest.mark.parametrize("name", ["sam", "looksam", "arwp"])
def test_a_keras_file_saved_without_the_name_still_loads(name, tmp_path):
    model = keras_flat.FlatMinimaModel(mlp(), _rule(name), seed=2)
    model.compile(optimizer="sgd", loss="mse")
    saved = str(tmp_path / "new.keras")
    model.save(saved)
    old = str(tmp_path / "old.keras")  # The same file, as the earlier version wrote it.
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                algorithm = config["config"]["algorithm"]["config"]
                assert algorithm.pop("name") == name
                data = json.dumps(config).encode()
            target.writestr(item, data)
    for path in (saved, old):
        assert keras.models.load_model(path).algorithm == model.algorithm


def test_a_bare_config_of_a_class_of_ones_own_resolves_by_its_keras_name():
    @keras.saving.register_keras_serializable(package="test_configs")
    class Registered(algorithms.SAM):
        pass

    class Unregistered(algorithms.Algorithm):
        def __init__(self, size=1.0):
            super().__init__()
            self.size = size

        def get_config(self):  # Does not call super(): the name is recorded anyway.
            return {"size": self.size}

    config = Registered(rho=0.2).get_config()
    assert config["name"] == "test_configs>Registered"
    assert algorithms.get(config) == Registered(rho=0.2)
    config = Unregistered(size=2.0).get_config()
    assert config == {"name": "Unregistered", "size": 2.0}
    with pytest.raises(ValueError, match=r"Unknown algorithm name 'Unregistered'.*"
                                         r"custom_objects=\{'Unregistered': YourClass\}"):
        algorithms.get(config)
    rebuilt = algorithms.get(config, custom_objects={"Unregistered": Unregistered})
    assert rebuilt == Unregistered(size=2.0)
    assert Unregistered.from_config(config) == Unregistered(size=2.0)


def test_configs_that_cannot_be_resolved_say_why():
    with pytest.raises(ValueError, match=r"needs the key 'name'.*'class_name' and 'config'.*"
                                         r"SAM\.from_config\(config\)"):
        algorithms.get({"rho": 0.1})
    with pytest.raises(ValueError, match=r"Unknown algorithm name 'SAM'.*Did you mean 'sam'"):
        algorithms.get({"name": "SAM", "rho": 0.1})  # Names are matched exactly.
    with pytest.raises(ValueError, match=r"SAM\.from_config received the config of 'asam' "
                                         r"\(ASAM\), not of SAM \('sam'\)"):
        algorithms.SAM.from_config(algorithms.ASAM().get_config())
    with pytest.raises(ValueError, match=r"Invalid config for algorithm 'SAM'.*unknown "
                                         r"argument `rhoo`\. Did you mean `rho`"):
        algorithms.get({"name": "sam", "rhoo": 0.1})
    with pytest.raises(ValueError, match="FlatMinimaModel, which is not an Algorithm"):
        algorithms.get({"name": "keras_flat>FlatMinimaModel"})


def test_the_name_is_not_part_of_the_repr():
    assert repr(algorithms.SAM(rho=0.1)) == (
        "SAM(perturbation_sync='global', rho=0.1, interval=1, start=None)")
