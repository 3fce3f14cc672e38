"""keras-flat: train Keras 3 models toward flat minima, and measure flatness.

`FlatMinimaModel(model, algorithm)` wraps any Keras 3 model so that its
`fit()` trains toward flat minima. It implements Algorithms 1 (randomly
smoothed perturbation) and 2 (sharpness-aware perturbation) of Ahn,
Jadbabaie & Sra, "How to escape sharp minima with random perturbations"
(ICML 2024, arXiv 2305.15659), and the rules below, which
`keras_flat.algorithms.get` and the `keras-flat` command line know by name.
docs/algorithms.md states each rule as implemented, with its arguments and
the validation problems the tests check.

Registered rules (`keras_flat.algorithms.names()`):

{registered_rules}
"""

from keras_flat.utils import compatibility

# Before anything else, so an old TensorFlow or Keras gets a clear error rather
# than a failure deep inside the first module that uses a newer API.
compatibility.check_installed()

from keras_flat import algorithms  # noqa: E402
from keras_flat import callbacks  # noqa: E402
from keras_flat import hessian  # noqa: E402
from keras_flat import landscape  # noqa: E402
from keras_flat.training.model import FlatMinimaModel  # noqa: E402

__doc__ = algorithms.registry.fill_docstring(__doc__)

__version__ = "0.1.0"

__all__ = [
    "FlatMinimaModel",
    "algorithms",
    "callbacks",
    "hessian",
    "landscape",
    "__version__",
]

# Modules that were public before this release, readable for one more release.
_MOVED = {"rng": "keras_flat.utils.rng", "vector": "keras_flat.utils.vector",
          "datasets": "keras_flat.app.datasets"}


def __getattr__(name):
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(
            f"`keras_flat.{name}` is internal now and will be removed from the package's "
            f"top level in the next release; import `{_MOVED[name]}` instead.",
            DeprecationWarning, stacklevel=2,
        )
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'keras_flat' has no attribute {name!r}")
