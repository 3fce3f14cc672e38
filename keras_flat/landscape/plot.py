"""Matplotlib figures of lines, planes and training paths.

The figures are built on `matplotlib.figure.Figure` with the Agg canvas, so
they need no display and leave pyplot's global state alone; each function
returns the figure (it displays in notebooks) and, given `path`, writes a
PNG.
"""

import os

import numpy as np

from keras_flat.landscape.surface import Surface1D
from keras_flat.landscape.surface import Surface2D

_AXIS_LABELS = {
    "random": ("α (filter-normalised random direction)", "β (second random direction)"),
    "eigen": ("α (top Hessian eigenvector, distance)", "β (second eigenvector, distance)"),
    "pca": ("first principal direction", "second principal direction"),
    "interpolation": ("α  in (1 − α)·w_a + α·w_b", ""),
    "custom": ("α", "β"),
}


def _figure(width, height):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the installation.
        raise ImportError(
            "keras_flat.landscape's plots need matplotlib: pip install \"keras-flat[demo]\"."
        ) from None
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    if path is not None:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        figure.savefig(path, dpi=100)
    return figure


def _as_list(value, kind, argument):
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items or not all(isinstance(s, kind) for s in items):
        raise TypeError(
            f"Argument `{argument}` must be a {kind.__name__} or a list of them. "
            f"Received: {argument}={value!r:.80}."
        )
    return items


def _labels(labels, count, argument="labels"):
    if labels is None:
        return [None] * count
    labels = [labels] if isinstance(labels, str) else list(labels)
    if len(labels) != count:
        raise ValueError(
            f"Argument `{argument}` must hold one label per surface ({count}). "
            f"Received {len(labels)}."
        )
    return labels


def plot_1d(surfaces, path=None, labels=None, metric="loss", log_scale=False, title=None):
    """Plots one or more `Surface1D` on shared axes.

    Args:
        surfaces: A `Surface1D` or a list of them (e.g. one per model, along
            the same random seed's directions).
        path: If given, the PNG file to write.
        labels: One legend label per surface.
        metric: `"loss"` or the name of a metric the surfaces hold.
        log_scale: Logarithmic value axis.
        title: Figure title.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    ```python
    keras_flat.landscape.plot_1d([line_sgd, line_sa], "lines.png", labels=["SGD", "SA"])
    ```
    """
    surfaces = _as_list(surfaces, Surface1D, "surfaces")
    labels = _labels(labels, len(surfaces))
    figure = _figure(5.5, 4)
    ax = figure.add_subplot()
    for surface, label in zip(surfaces, labels):
        ax.plot(surface.alphas, _values(surface, metric), label=label)
    if surfaces[0].kind == "interpolation":
        for x in (0.0, 1.0):
            ax.axvline(x, color="0.8", linewidth=0.8, zorder=0)
    ax.set(xlabel=_AXIS_LABELS.get(surfaces[0].kind, ("α", ""))[0], ylabel=metric,
           yscale="log" if log_scale else "linear", title=title or "")
    if any(label is not None for label in labels):
        ax.legend()
    return _save(figure, path)


def contour_levels(surfaces, levels=20, vmin=None, vmax=None, log_scale=False, metric="loss"):
    """The contour levels shared by `surfaces` (same scale for every panel)."""
    values = np.concatenate([np.ravel(_values(s, metric)) for s in surfaces])
    values = values[np.isfinite(values)]
    if log_scale:
        values = values[values > 0]
    if values.size == 0:
        raise ValueError(f"The surfaces hold no finite {metric} value to plot.")
    low = values.min() if vmin is None else vmin
    high = values.max() if vmax is None else vmax
    if high <= low:
        high = low + max(abs(low), 1.0) * 1e-6
    if np.ndim(levels) > 0:
        return np.asarray(levels, np.float64)
    if log_scale:
        return np.geomspace(low, high, int(levels))
    return np.linspace(low, high, int(levels))


def plot_contour(surfaces, path=None, labels=None, levels=20, vmin=None, vmax=None,
                 log_scale=False, metric="loss", title=None, filled=True):
    """Contour plots of one or more `Surface2D`, side by side, on one scale.

    Every panel uses the same contour levels and one colour bar, so minima
    of different models (e.g. plain SGD's and SA's, along directions drawn
    with the same seed) compare directly.

    Args:
        surfaces: A `Surface2D` or a list of them.
        path: If given, the PNG file to write.
        labels: One panel title per surface.
        levels: Number of contour levels, or the levels themselves.
        vmin, vmax: Value range of the levels (default: the surfaces' range).
        log_scale: Logarithmically spaced levels.
        metric: `"loss"` or the name of a metric the surfaces hold.
        title: Figure title.
        filled: Filled contours (`contourf`) with line contours on top.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    surfaces = _as_list(surfaces, Surface2D, "surfaces")
    labels = _labels(labels, len(surfaces))
    chosen = contour_levels(surfaces, levels, vmin, vmax, log_scale, metric)
    figure = _figure(4.2 * len(surfaces) + 1.0, 4)
    axes = figure.subplots(1, len(surfaces), squeeze=False)[0]
    mappable = None
    for ax, surface, label in zip(axes, surfaces, labels):
        mappable = _contour(ax, surface, chosen, metric, filled, log_scale)
        ax.plot([0], [0], marker="*", color="white" if filled else "black", markersize=10,
                markeredgecolor="black")
        xlabel, ylabel = _AXIS_LABELS.get(surface.kind, ("α", "β"))
        ax.set(xlabel=xlabel, ylabel=ylabel, title=label or "")
    figure.colorbar(mappable, ax=list(axes), label=metric, format="%.3g")
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_trajectory(result, path=None, levels=20, log_scale=False, title=None):
    """The loss contours on the PCA plane with the training path on top.

    Args:
        result: A `TrajectoryPCA` (from `keras_flat.landscape.trajectory_pca`).
        path: If given, the PNG file to write.
        levels: Number of contour levels, or the levels themselves.
        log_scale: Logarithmically spaced levels.
        title: Figure title.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    surface = result.surface
    chosen = contour_levels([surface], levels, log_scale=log_scale)
    figure = _figure(5.5, 4.5)
    ax = figure.add_subplot()
    mappable = _contour(ax, surface, chosen, "loss", True, log_scale)
    x, y = result.coordinates[:, 0], result.coordinates[:, 1]
    ax.plot(x, y, color="black", marker="o", markersize=3, linewidth=1)
    ax.plot(x[:1], y[:1], marker="s", color="white", markeredgecolor="black", label="start")
    ax.plot(x[-1:], y[-1:], marker="*", color="white", markeredgecolor="black",
            markersize=12, label="end")
    ratio = result.explained_variance_ratio
    ax.set(xlabel=f"PC1 ({100 * ratio[0]:.1f} % of the variance)",
           ylabel=f"PC2 ({100 * ratio[1]:.1f} %)", title=title or "")
    ax.legend(loc="best", fontsize="small")
    figure.colorbar(mappable, ax=ax, label="loss", format="%.3g")
    return _save(figure, path)


def _values(surface, metric):
    if metric == "loss":
        return surface.loss
    if metric not in surface.metrics:
        raise ValueError(
            f"Argument `metric` must be 'loss' or one of {sorted(surface.metrics)}. "
            f"Received: metric={metric!r}."
        )
    return surface.metrics[metric]


def _contour(ax, surface, levels, metric, filled, log_scale):
    values = np.asarray(_values(surface, metric), np.float64)
    values = np.clip(values, levels[0], levels[-1])  # Out-of-range values take the end colours.
    norm = None
    if log_scale:
        from matplotlib.colors import LogNorm

        norm = LogNorm(vmin=levels[0], vmax=levels[-1])
    if filled:
        mappable = ax.contourf(surface.alphas, surface.betas, values, levels=levels,
                               cmap="viridis", norm=norm)
        ax.contour(surface.alphas, surface.betas, values, levels=levels, colors="k",
                   linewidths=0.3, alpha=0.5)
    else:
        mappable = ax.contour(surface.alphas, surface.betas, values, levels=levels,
                              cmap="viridis", norm=norm)
    return mappable


def plot_comparison(lines, planes, path=None, labels=None, levels=15, log_scale=False,
                    title=None):
    """Several minima side by side, on one scale: a 1D panel and one contour each.

    The first panel overlays the `Surface1D`s; the others show each
    `Surface2D` with the same contour levels and one colour bar. Pass
    surfaces along directions drawn with the same seed (filter-normalised
    to each model's own weights), as Li et al. compare minima.

    Args:
        lines: A list of `Surface1D`, one per model.
        planes: A list of `Surface2D`, one per model.
        path: If given, the PNG file to write.
        labels: One label per model.
        levels: Number of contour levels, or the levels themselves.
        log_scale: Logarithmic loss axis and contour levels.
        title: Figure title.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    lines = _as_list(lines, Surface1D, "lines")
    planes = _as_list(planes, Surface2D, "planes")
    if len(lines) != len(planes):
        raise ValueError(
            f"Arguments `lines` and `planes` must hold one surface per model; received "
            f"{len(lines)} and {len(planes)}."
        )
    labels = _labels(labels, len(planes))
    chosen = contour_levels(planes, levels, log_scale=log_scale)
    figure = _figure(3.4 * (len(planes) + 1) + 0.8, 3.3)
    axes = figure.subplots(1, len(planes) + 1, squeeze=False)[0]
    for line, label in zip(lines, labels):
        axes[0].plot(line.alphas, line.loss, label=label)
    axes[0].set(xlabel=_AXIS_LABELS.get(lines[0].kind, ("α", ""))[0], ylabel="loss",
                yscale="log" if log_scale else "linear", title="along the first direction")
    if any(label is not None for label in labels):
        axes[0].legend(fontsize="small")
    mappable = None
    for ax, plane, label in zip(axes[1:], planes, labels):
        mappable = _contour(ax, plane, chosen, "loss", True, log_scale)
        ax.plot([0], [0], marker="*", color="white", markersize=10, markeredgecolor="black")
        xlabel, ylabel = _AXIS_LABELS.get(plane.kind, ("α", "β"))
        ax.set(xlabel=xlabel.split(" (")[0], ylabel=ylabel.split(" (")[0], title=label or "")
    figure.colorbar(mappable, ax=list(axes[1:]), label="loss", format="%.3g")
    if title:
        figure.suptitle(title)
    return _save(figure, path)
