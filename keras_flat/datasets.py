"""Small classification datasets for demos and examples.

`"digits"` (scikit-learn's bundled 8x8 handwritten digits, 1,797 images)
works offline. Any other name is loaded with TensorFlow Datasets
(`pip install "keras-flat[datasets]"`), which downloads it the first time
and needs internet access.
"""

import dataclasses

import numpy as np

OFFLINE = ("digits",)


@dataclasses.dataclass
class Dataset:
    """A train/test split of a classification dataset, as NumPy arrays.

    Attributes:
        name: Dataset name.
        x_train, y_train, x_test, y_test: Inputs (float32, scaled to [0, 1])
            and integer labels.
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


def load(name="digits", test_fraction=0.25, seed=0, image_shape=False, limit=None):
    """Loads a classification dataset as a `Dataset`.

    Args:
        name: `"digits"` (offline) or a TensorFlow Datasets name with
            `"train"` and `"test"` splits (e.g. `"mnist"`; needs internet).
        test_fraction: Held-out fraction for datasets without a test split
            (digits), in (0, 1).
        seed: Seed of the stratified train/test split.
        image_shape: Return images as (height, width, channels) instead of
            flat vectors.
        limit: Keep at most this many training and test examples.

    Returns:
        A `Dataset`.

    Example:

    >>> data = keras_flat.datasets.load("digits")
    >>> data.x_train.shape, data.num_classes
    ((1347, 64), 10)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Argument `name` must be a dataset name. Received: name={name!r}.")
    if not 0 < test_fraction < 1:
        raise ValueError(
            "Argument `test_fraction` must be in (0, 1). "
            f"Received: test_fraction={test_fraction!r}."
        )
    if name == "digits":
        data = _digits(test_fraction, seed, image_shape)
    else:
        data = _tfds(name, image_shape)
    if limit is not None:
        data.x_train, data.y_train = data.x_train[:limit], data.y_train[:limit]
        data.x_test, data.y_test = data.x_test[:limit], data.y_test[:limit]
    return data


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
