"""Small classification datasets for demos and examples.

Two work offline: `"digits"` (scikit-learn's bundled 8x8 handwritten
digits, 1,797 images) and `"mnist1d"` (MNIST-1D of Greydanus & Kobak,
arXiv 2011.14439, generated locally by the `mnist1d` package:
`pip install "keras-flat[datasets]"`). Any other name is loaded with
TensorFlow Datasets (same extra), which downloads it the first time and
needs internet access.
"""

import dataclasses
import random

import numpy as np

from keras_flat.utils.validation import check_count
from keras_flat.utils.validation import check_number

OFFLINE = ("digits", "mnist1d")

# The arguments of the published MNIST-1D (mnist1d.data.get_dataset_args()):
# 5,000 sequences, 80% for training, seed 42. With them `mnist1d()` rebuilds
# the published file mnist1d_data.pkl to within 1e-15.
MNIST1D_NUM_SAMPLES = 5000
MNIST1D_TEST_FRACTION = 0.2
MNIST1D_SEED = 42


@dataclasses.dataclass
class Dataset:
    """A train/test split of a classification dataset, as NumPy arrays.

    Attributes:
        name: Dataset name.
        x_train, y_train, x_test, y_test: Inputs (float32; scaled to [0, 1],
            except MNIST-1D, standardised as published) and integer labels.
        num_classes: Number of classes.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self):
        return self.x_train.shape[1:]


def load(name="digits", test_fraction=None, seed=None, image_shape=False, limit=None):
    """Loads a classification dataset as a `Dataset`.

    Args:
        name: `"digits"` or `"mnist1d"` (offline), or a TensorFlow Datasets
            name with `"train"` and `"test"` splits (e.g. `"mnist"`; needs
            internet).
        test_fraction: Held-out fraction, in (0, 1), for the datasets
            without a fixed test split: digits (default 0.25) and mnist1d
            (default 0.2, the published split). Not allowed with a
            TensorFlow Datasets name.
        seed: Seed of digits' stratified train/test split (default 0) or of
            MNIST-1D's generator (default 42, the published dataset). Not
            allowed with a TensorFlow Datasets name.
        image_shape: Return inputs with a channel axis, (height, width, 1)
            for images and (40, 1) for MNIST-1D, instead of flat vectors.
        limit: Keep at most this many training and test examples.

    Returns:
        A `Dataset`.

    Example:

    >>> data = keras_flat.app.datasets.load("digits")
    >>> data.x_train.shape, data.num_classes
    ((1347, 64), 10)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Argument `name` must be a dataset name. Received: name={name!r}.")
    if test_fraction is not None and not 0 < test_fraction < 1:
        raise ValueError(
            "Argument `test_fraction` must be in (0, 1). "
            f"Received: test_fraction={test_fraction!r}."
        )
    if name == "digits":
        data = _digits(0.25 if test_fraction is None else test_fraction,
                       0 if seed is None else seed, image_shape)
    elif name == "mnist1d":
        data = mnist1d(
            test_fraction=MNIST1D_TEST_FRACTION if test_fraction is None else test_fraction,
            seed=MNIST1D_SEED if seed is None else seed, sequence_shape=image_shape)
    else:
        if test_fraction is not None or seed is not None:
            raise ValueError(
                f"Dataset {name!r} comes with its own train/test split: arguments "
                "`test_fraction` and `seed` apply only to the offline datasets "
                f"{list(OFFLINE)}. Received: test_fraction={test_fraction!r}, seed={seed!r}."
            )
        data = _tfds(name, image_shape)
    if limit is not None:
        data.x_train, data.y_train = data.x_train[:limit], data.y_train[:limit]
        data.x_test, data.y_test = data.x_test[:limit], data.y_test[:limit]
    return data


def mnist1d(num_samples=MNIST1D_NUM_SAMPLES, seed=MNIST1D_SEED,
            test_fraction=MNIST1D_TEST_FRACTION, sequence_shape=False):
    """MNIST-1D (Greydanus & Kobak, arXiv 2011.14439), generated locally.

    Ten hand-made 1-D digit templates are padded, translated, scaled,
    sheared and overlaid with correlated and i.i.d. noise into sequences of
    length 40 (`mnist1d.data.make_dataset`); nothing is downloaded. The
    defaults are the published dataset's arguments (5,000 sequences, 4,000
    for training, seed 42) and rebuild the published file to within 1e-15.
    The published baselines on it: logistic regression 32%, MLP 68%, CNN
    94%, GRU 91% test accuracy. The generator seeds NumPy's and Python's
    global random state; this function restores both afterwards.

    Args:
        num_samples: Training plus test sequences, a positive multiple of
            10 (the classes are equally frequent before the split).
        seed: Seed of the generator, an integer >= 0.
        test_fraction: Held-out fraction, in (0, 1); the split is the
            package's (the last `test_fraction` of a shuffled order).
        sequence_shape: Return inputs as (40, 1) sequences (for `Conv1D`)
            instead of flat vectors of 40.

    Returns:
        A `Dataset` named `"mnist1d"`, inputs standardised to mean 0 and
        standard deviation 1 over the whole set, as published.

    Raises:
        ImportError: when the `mnist1d` package is not installed.

    Example:

    >>> data = keras_flat.app.datasets.mnist1d()
    >>> data.x_train.shape, data.x_test.shape
    ((4000, 40), (1000, 40))
    """
    num_samples = check_count("num_samples", num_samples, 10)
    if num_samples % 10:
        raise ValueError(
            "Argument `num_samples` must be a multiple of 10 (one tenth per class). "
            f"Received: num_samples={num_samples!r}."
        )
    seed = check_count("seed", seed, 0)
    test_fraction = check_number("test_fraction", test_fraction)
    train = int(num_samples * (1 - test_fraction))
    if not 0 < test_fraction < 1 or not 0 < train < num_samples:
        raise ValueError(
            "Argument `test_fraction` must be in (0, 1) and leave both splits non-empty. "
            f"Received: test_fraction={test_fraction!r} with num_samples={num_samples}."
        )
    try:
        from mnist1d.data import get_dataset_args
        from mnist1d.data import make_dataset
    except ImportError as error:
        raise ImportError(
            'The "mnist1d" dataset is generated by the mnist1d package: '
            'pip install "keras-flat[datasets]" (or pip install mnist1d).'
        ) from error
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = num_samples, seed, 1 - test_fraction
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        generated = make_dataset(args)  # Never get_dataset(): it downloads.
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    x_train, x_test = (generated[k].astype("float32") for k in ("x", "x_test"))
    if sequence_shape:
        x_train, x_test = x_train[..., None], x_test[..., None]
    return Dataset("mnist1d", x_train, generated["y"].astype("int64"), x_test,
                   generated["y_test"].astype("int64"), 10)


def _digits(test_fraction, seed, image_shape):
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            'The "digits" dataset needs scikit-learn: pip install "keras-flat[demo]".'
        ) from error
    bunch = load_digits()
    x = (bunch.data / 16.0).astype("float32")
    y = bunch.target.astype("int64")
    if image_shape:
        x = x.reshape(-1, 8, 8, 1)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):  # Stratified split.
        idx = rng.permutation(np.flatnonzero(y == label))
        cut = int(round(len(idx) * test_fraction))
        test.extend(idx[:cut])
        train.extend(idx[cut:])
    train, test = rng.permutation(train), rng.permutation(test)
    return Dataset("digits", x[train], y[train], x[test], y[test], 10)


def _to_numpy(tfds, dataset, chunk=4096):
    xs, ys = [], []
    for x, y in tfds.as_numpy(dataset.batch(chunk)):
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def _tfds(name, image_shape):
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            f"Dataset {name!r} is loaded with TensorFlow Datasets: "
            'pip install "keras-flat[datasets]". Offline datasets: '
            f"{list(OFFLINE)}."
        ) from error
    splits, info = tfds.load(name, split=["train", "test"], as_supervised=True,
                             with_info=True)
    (x_train, y_train), (x_test, y_test) = [_to_numpy(tfds, split) for split in splits]
    num_classes = info.features["label"].num_classes
    scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    x_train = (x_train / scale).astype("float32")
    x_test = (x_test / scale).astype("float32")
    if not image_shape:
        x_train = x_train.reshape(len(x_train), -1)
        x_test = x_test.reshape(len(x_test), -1)
    return Dataset(name, x_train, y_train.astype("int64"), x_test, y_test.astype("int64"),
                   num_classes)
