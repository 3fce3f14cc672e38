"""The optimisation path on the plane of its two principal directions (Li et al., 2018)."""

import dataclasses

import keras
import numpy as np

from keras_flat.landscape.directions import Directions
from keras_flat.landscape.evaluator import evaluator_for
from keras_flat.landscape.surface import Surface2D
from keras_flat.landscape.surface import surface_2d
from keras_flat.landscape.table import write_csv
from keras_flat.utils.validation import check_bool
from keras_flat.utils.validation import check_count
from keras_flat.utils.validation import check_number


class TrajectoryRecorder(keras.callbacks.Callback):
    """Records the trainable weights during `fit`, for `trajectory_pca`.

    Each snapshot is the flattened trainable weights (float32, in the order
    of `model.trainable_variables`), so `n` snapshots of a model with `d`
    parameters take `4 * n * d` bytes of host memory.

    Args:
        every_n_epochs: Record at the end of every this many epochs (1).
        every_n_batches: If given, record every this many training batches
            instead of at epoch ends.
        include_initial: Also record the weights when training begins
            (True).

    Attributes:
        weights: The snapshots, an `(n, d)` float32 array.
        steps: Training batches run before each snapshot, an `(n,)` array.
        epochs: Epochs completed at each snapshot (fractional for batch
            snapshots), an `(n,)` array.

    Example:

    ```python
    recorder = keras_flat.landscape.TrajectoryRecorder()
    model.fit(x, y, epochs=20, callbacks=[recorder])
    path = keras_flat.landscape.trajectory_pca(model, (x, y), recorder)
    keras_flat.landscape.plot_trajectory(path, "trajectory.png")
    ```
    """

    def __init__(self, every_n_epochs=1, every_n_batches=None, include_initial=True):
        super().__init__()
        self.every_n_epochs = check_count("every_n_epochs", every_n_epochs, 1)
        self.every_n_batches = (None if every_n_batches is None
                                else check_count("every_n_batches", every_n_batches, 1))
        self.include_initial = check_bool("include_initial", include_initial)
        self._snapshots, self._steps, self._epochs = [], [], []
        self._step = 0
        self._epoch = 0
        self._batches_per_epoch = None

    def _record(self, epoch):
        flat = np.concatenate([np.asarray(v, np.float32).ravel()
                               for v in self.model.trainable_variables])
        self._snapshots.append(flat)
        self._steps.append(self._step)
        self._epochs.append(float(epoch))

    def on_train_begin(self, logs=None):
        if self.include_initial and not self._snapshots:
            self._record(0)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = self._step

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.every_n_batches is not None and self._step % self.every_n_batches == 0:
            per_epoch = (self.params or {}).get("steps") or self._batches_per_epoch
            done = self._step - self._epoch_start
            self._record(self._epoch + (min(done / per_epoch, 1.0) if per_epoch else 0.0))

    def on_epoch_end(self, epoch, logs=None):
        self._batches_per_epoch = self._step - self._epoch_start
        if self.every_n_batches is None and (epoch + 1) % self.every_n_epochs == 0:
            self._record(epoch + 1)

    @property
    def weights(self):
        if not self._snapshots:
            return np.zeros((0, 0), np.float32)
        return np.stack(self._snapshots)

    @property
    def steps(self):
        return np.asarray(self._steps, np.int64)

    @property
    def epochs(self):
        return np.asarray(self._epochs, np.float64)


@dataclasses.dataclass
class TrajectoryPCA:
    """A training path projected on its top two principal directions.

    The directions are the top two right singular vectors of the centred
    matrix of snapshots minus the final weights `w` (the model's current
    weights), as in Li et al.; the path is plotted at `(snapshot - w) ·
    direction`, so the final weights sit at the origin of the plane.

    A projection can hide how far a snapshot is from the plane, where the
    contour under it does not describe it. `off_plane` gives, for each
    snapshot, the fraction of its distance from `w` that lies outside the
    plane, and `loss` and `plane_loss` the loss at the snapshot itself and
    at its projection (the value the contour shows).

    Attributes:
        directions: A `Directions` of kind `"pca"` (two orthonormal rows;
            `values` holds their explained variance ratios).
        coordinates: An `(n, 2)` array, the snapshots on the plane.
        explained_variance: Variance along each direction, `S**2 / (n - 1)`
            with `S` the singular values, a `(2,)` array.
        explained_variance_ratio: `S**2 / sum(S**2)`, a `(2,)` array.
        off_plane: An `(n,)` array in [0, 1].
        loss: The loss at each snapshot, an `(n,)` array (NaN if not
            evaluated).
        plane_loss: The loss at each snapshot's projection, an `(n,)` array
            (NaN if not evaluated).
        steps: Training batches before each snapshot.
        epochs: Epochs completed at each snapshot.
        surface: The loss on the plane, a `Surface2D`.
    """

    directions: Directions
    coordinates: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    off_plane: np.ndarray
    loss: np.ndarray
    plane_loss: np.ndarray
    steps: np.ndarray
    epochs: np.ndarray
    surface: Surface2D

    def to_csv(self, path):
        """Writes one row per snapshot (the surface has its own `to_csv`)."""
        return write_csv(path, {
            "step": self.steps, "epoch": self.epochs,
            "pc1": self.coordinates[:, 0], "pc2": self.coordinates[:, 1],
            "loss": self.loss, "plane_loss": self.plane_loss, "off_plane": self.off_plane,
        })


def trajectory_pca(model, data, trajectory, resolution=21, margin=0.25, *,
                   evaluate_snapshots=True, metrics=False, **options):
    """Projects a training path on its top two PCA directions and maps the loss there.

    Args:
        model: The trained, compiled Keras model; its current weights are
            the origin of the plane (normally the last snapshot).
        data: The data the loss is averaged over (see
            `keras_flat.landscape.surface_1d`).
        trajectory: A `TrajectoryRecorder`, or an `(n, d)` array of
            flattened trainable weights (n >= 3).
        resolution: Points per axis of the surface, >= 2.
        margin: Fraction of the path's extent added on each side of the
            surface's range, >= 0.
        evaluate_snapshots: Also evaluate the loss at every snapshot and at
            its projection (2n more points).
        metrics: Compute the compiled metrics on the surface too.
        **options: `training`, `loss`, `batch_size`, `num_batches`,
            `jit_compile` (see `keras_flat.landscape.Evaluator`).

    Returns:
        A `TrajectoryPCA`.

    Example:

    ```python
    path = keras_flat.landscape.trajectory_pca(model, (x, y), recorder)
    print(path.explained_variance_ratio, path.off_plane.max())
    ```
    """
    check_number("margin", margin, minimum=0.0)
    check_bool("evaluate_snapshots", evaluate_snapshots)
    evaluator = evaluator_for(model, data, metrics=metrics, **options)
    keras_model = evaluator.model
    if isinstance(trajectory, TrajectoryRecorder):
        snapshots, steps, epochs = trajectory.weights, trajectory.steps, trajectory.epochs
    else:
        snapshots = np.asarray(trajectory)
        steps = np.arange(len(snapshots)) if snapshots.ndim == 2 else None
        epochs = np.full(len(snapshots), np.nan) if snapshots.ndim == 2 else None
    dimension = evaluator.dimension
    if snapshots.ndim != 2 or snapshots.shape[1] != dimension or len(snapshots) < 3:
        raise ValueError(
            "Argument `trajectory` must be a TrajectoryRecorder or an (n, d) array of at "
            f"least 3 snapshots of the model's d = {dimension} trainable parameters. "
            f"Received shape {snapshots.shape}."
        )
    origin = np.concatenate([np.asarray(v, np.float64).ravel()
                             for v in keras_model.trainable_variables])
    moved = snapshots.astype(np.float64) - origin
    centred = moved - moved.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    if singular[1] <= 1e-12 * max(singular[0], 1e-300):
        raise ValueError(
            "Argument `trajectory` spans fewer than two directions (its snapshots lie on "
            "a line or a point); record more, or more different, snapshots."
        )
    vectors = vt[:2].copy()
    coordinates = moved @ vectors.T
    flip = np.where(coordinates[0] > 0, -1.0, 1.0)  # The path starts at negative values.
    vectors *= flip[:, None]
    coordinates *= flip[None, :]
    variance = singular ** 2
    ratio = variance[:2] / variance.sum()
    norms = np.linalg.norm(moved, axis=1)
    residual = np.linalg.norm(moved - coordinates @ vectors, axis=1)
    off_plane = np.divide(residual, norms, out=np.zeros_like(norms), where=norms > 0)
    directions = Directions(vectors=vectors.astype(np.float32), kind="pca",
                            names=[getattr(v, "path", v.name)
                                   for v in keras_model.trainable_variables],
                            shapes=[tuple(v.shape) for v in keras_model.trainable_variables],
                            values=ratio)
    extents = []
    for axis in range(2):
        low = min(coordinates[:, axis].min(), 0.0)
        high = max(coordinates[:, axis].max(), 0.0)
        pad = margin * (high - low)
        extents.append((low - pad, high + pad))
    surface = surface_2d(evaluator, None, directions, extent=tuple(extents),
                         resolution=resolution)
    surface.kind = "pca"
    loss = plane_loss = np.full(len(snapshots), np.nan)
    if evaluate_snapshots:
        loss = evaluator.evaluate(moved, np.arange(len(moved)), mode="rows")["loss"]
        plane_loss = evaluator.evaluate(vectors, coordinates)["loss"]
    return TrajectoryPCA(
        directions=directions, coordinates=coordinates,
        explained_variance=variance[:2] / (len(snapshots) - 1),
        explained_variance_ratio=ratio, off_plane=off_plane, loss=loss,
        plane_loss=plane_loss, steps=np.asarray(steps), epochs=np.asarray(epochs),
        surface=surface,
    )
