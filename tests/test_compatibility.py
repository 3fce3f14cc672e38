"""The version floor: a clear error below it, and one floor everywhere it is stated."""

import configparser
import os
import re
import subprocess
import sys

import pytest

from keras_flat.utils import compatibility

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.compat


@pytest.mark.parametrize("tensorflow_version, keras_version, bad", [
    ("2.15.1", "3.15.1", ["TensorFlow 2.15.1"]),
    ("2.21.0", "3.10.0", ["Keras 3.10.0"]),
    ("2.15.0", "2.15.0", ["TensorFlow 2.15.0", "Keras 2.15.0"]),
    ("1.15.5", "3.11.0", ["TensorFlow 1.15.5"]),
    ("2.21.0", "unknown", ["Keras unknown"]),
])
def test_versions_below_the_floor_raise_naming_installed_and_required(
        tensorflow_version, keras_version, bad):
    with pytest.raises(ImportError) as error:
        compatibility.check_versions(tensorflow_version, keras_version)
    message = str(error.value)
    assert "TensorFlow >= 2.16" in message and "Keras >= 3.11" in message
    assert f"TensorFlow {tensorflow_version}" in message and f"Keras {keras_version}" in message
    for part in bad:
        assert f"{part} is installed" in message


@pytest.mark.parametrize("tensorflow_version, keras_version", [
    ("2.16.1", "3.11.0"), ("2.16.0rc0", "3.11.3"), ("2.21.0", "3.15.1"),
    ("2.22.0-dev20260101", "3.16.0.dev2026"), ("3.0.0", "4.0.0"), ("2.100.0", "3.11"),
])
def test_versions_at_or_above_the_floor_pass(tensorflow_version, keras_version):
    compatibility.check_versions(tensorflow_version, keras_version)


def _floor(requirements, name):
    for line in requirements.split():
        match = re.fullmatch(rf"{name}>=(\d+)\.(\d+)", line.strip())
        if match:
            return int(match.group(1)), int(match.group(2))
    raise AssertionError(f"no {name}>= line in {requirements!r}")


def test_setup_cfg_and_ci_state_the_floor_the_import_check_enforces():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    requirements = config["options"]["install_requires"]
    assert _floor(requirements, "tensorflow") == compatibility.MINIMUM_TENSORFLOW
    assert _floor(requirements, "keras") == compatibility.MINIMUM_KERAS
    # CI's compatibility job installs exactly the floor's first releases.
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    tf_pin = re.search(r"OLDEST_TENSORFLOW=(\d+)\.(\d+)\.(\d+)", ci)
    keras_pin = re.search(r"OLDEST_KERAS=(\d+)\.(\d+)\.(\d+)", ci)
    assert tf_pin and keras_pin
    assert (int(tf_pin.group(1)), int(tf_pin.group(2))) == compatibility.MINIMUM_TENSORFLOW
    assert (int(keras_pin.group(1)), int(keras_pin.group(2))) == compatibility.MINIMUM_KERAS
    assert int(keras_pin.group(3)) == 0  # The oldest release of the minor version.


def test_import_fails_with_the_versions_when_keras_is_too_old():
    # A fresh interpreter with TensorFlow and Keras imported, then made to look old.
    code = (
        "import keras, tensorflow\n"
        "keras.__version__ = '3.10.2'\n"
        "try:\n"
        "    import keras_flat\n"
        "except ImportError as error:\n"
        "    print('IMPORT-ERROR', error)\n"
        "else:\n"
        "    print('IMPORTED')\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=300)
    assert "IMPORT-ERROR" in result.stdout, result.stdout + result.stderr
    assert "Keras 3.10.2 is installed" in result.stdout
    assert "Keras >= 3.11" in result.stdout
