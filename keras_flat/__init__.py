"""keras-flat: train Keras 3 models toward flat minima, and measure flatness.

Implements Algorithms 1 (randomly smoothed perturbation) and 2
(sharpness-aware perturbation) of Ahn, Jadbabaie & Sra, "How to escape
sharp minima with random perturbations" (ICML 2024, arXiv 2305.15659), with
SAM and ASAM as baselines, as a `keras.Model` wrapper whose `fit()` does the
work.
"""

from keras_flat import algorithms
from keras_flat import callbacks
from keras_flat import datasets
from keras_flat import hessian
from keras_flat import landscape
from keras_flat import rng
from keras_flat import vector
from keras_flat.model import FlatMinimaModel

__version__ = "0.1.0"

__all__ = [
    "FlatMinimaModel",
    "algorithms",
    "callbacks",
    "datasets",
    "hessian",
    "landscape",
    "rng",
    "vector",
    "__version__",
]
