"""The oldest TensorFlow and Keras keras-flat supports, checked at import.

The floor is the oldest pair on which the compatibility subset of the tests
(`pytest -m compat`: reference steps, the V1 rates, save/load/resume, a
distributed equality, the rng identities and a Hessian check) passes; CI
runs that subset on exactly these versions. `setup.cfg` states the same
floor.
"""

import re

#: Oldest supported TensorFlow, as (major, minor).
MINIMUM_TENSORFLOW = (2, 16)
#: Oldest supported Keras, as (major, minor).
MINIMUM_KERAS = (3, 11)


def parse_version(version):
    """Returns `(major, minor)` of a version string such as `"2.16.1"` or `"2.19.0-rc0"`.

    Raises:
        ValueError: if `version` does not start with two dot-separated numbers.
    """
    match = re.match(r"\s*(\d+)\.(\d+)", str(version))
    if match is None:
        raise ValueError(f"Cannot read a version number from {version!r}.")
    return int(match.group(1)), int(match.group(2))


def _text(version):
    return ".".join(str(part) for part in version)


def check_versions(tensorflow_version, keras_version):
    """Raises `ImportError` unless both versions are at or above the floor.

    Args:
        tensorflow_version: The installed TensorFlow's version string
            (`tf.__version__`).
        keras_version: The installed Keras's version string
            (`keras.__version__`).

    Raises:
        ImportError: naming the installed and the required versions of the
            package(s) below the floor.

    Example:

    >>> check_versions("2.21.0", "3.15.1")  # Returns None.
    >>> check_versions("2.15.0", "2.15.0")
    Traceback (most recent call last):
    ...
    ImportError: keras-flat needs TensorFlow >= 2.16 and Keras >= 3.11; ...
    """
    problems = []
    for name, installed, minimum in (
        ("TensorFlow", tensorflow_version, MINIMUM_TENSORFLOW),
        ("Keras", keras_version, MINIMUM_KERAS),
    ):
        try:
            too_old = parse_version(installed) < minimum
        except ValueError:
            too_old = True
        if too_old:
            problems.append(f"{name} {installed} is installed")
    if problems:
        raise ImportError(
            f"keras-flat needs TensorFlow >= {_text(MINIMUM_TENSORFLOW)} and Keras >= "
            f"{_text(MINIMUM_KERAS)}; {' and '.join(problems)} (installed: TensorFlow "
            f"{tensorflow_version}, Keras {keras_version}). Upgrade with "
            f'pip install "tensorflow>={_text(MINIMUM_TENSORFLOW)}" '
            f'"keras>={_text(MINIMUM_KERAS)}".'
        )


def check_installed():
    """`check_versions` for the TensorFlow and Keras that `import` finds."""
    import keras
    import tensorflow as tf

    check_versions(tf.__version__, keras.__version__)
