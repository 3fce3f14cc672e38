"""Landscapes of several minima of one architecture, on one scale."""

import os
import re

from keras_flat.landscape.evaluator import Evaluator
from keras_flat.landscape.plot import plot_comparison
from keras_flat.landscape.random_directions import random_directions
from keras_flat.landscape.surface import surface_1d
from keras_flat.landscape.surface import surface_2d


def compare_minima(models, data, labels, output_dir=None, seed=0, extent=1.0,
                   resolution=21, resolution_1d=51, log_scale=False, title=None,
                   **options):
    """1D and 2D landscapes of each model along filter-normalised random directions.

    Every model gets the directions drawn with the same `seed` (the same
    Gaussian draw, filter-normalised to its own weights), so the plots of
    different minima of one architecture compare on the same footing; the
    figure shares one loss scale.

    Args:
        models: Built, compiled Keras models of the same architecture.
        data: The data the loss is averaged over.
        labels: One label per model.
        output_dir: If given, writes `landscape.png` and, per model,
            `landscape_<label>_1d.csv` and `landscape_<label>_2d.csv` there.
        seed: Seed of the random directions.
        extent: Largest coefficient along each direction.
        resolution: Points per axis of the 2D surfaces.
        resolution_1d: Points of the 1D surfaces.
        log_scale: Logarithmic loss axis and contour levels.
        title: Figure title.
        **options: `training`, `batch_size`, `num_batches`, `jit_compile`
            (see `keras_flat.landscape.surface_1d`).

    Returns:
        `(lines, planes, figure, paths)`: the `Surface1D`s, the `Surface2D`s,
        the figure and the files written.
    """
    if len(labels) != len(models):
        raise ValueError(
            f"Argument `labels` must hold one label per model ({len(models)}). "
            f"Received {len(labels)}."
        )
    lines, planes = [], []
    for model in models:
        directions = random_directions(model, num_directions=2, seed=seed)
        evaluator = Evaluator(model, data, **options)  # Traced once for both surfaces.
        lines.append(surface_1d(evaluator, None, directions, extent=extent,
                                resolution=resolution_1d))
        planes.append(surface_2d(evaluator, None, directions, extent=extent,
                                 resolution=resolution))
    paths = []
    image = None
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        for label, line, plane in zip(labels, lines, planes):
            stem = os.path.join(output_dir, f"landscape_{_slug(label)}")
            paths += [line.to_csv(stem + "_1d.csv"), plane.to_csv(stem + "_2d.csv")]
        image = os.path.join(output_dir, "landscape.png")
        paths.append(image)
    figure = plot_comparison(lines, planes, image, labels=labels, log_scale=log_scale,
                             title=title)
    return lines, planes, figure, paths


def _slug(label):
    return re.sub(r"[^a-z0-9]+", "_", str(label).lower()).strip("_") or "model"
