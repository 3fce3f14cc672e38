"""Spectral density of the Hessian by stochastic Lanczos quadrature."""

import dataclasses

import numpy as np

from keras_flat.hessian.eigen import Lanczos
from keras_flat.hessian.eigen import drive
from keras_flat.utils.deprecation import renamed_arguments
from keras_flat.utils.deprecation import renamed_attribute


@dataclasses.dataclass
class SpectralDensity:
    """An estimate of the Hessian's eigenvalue density.

    Attributes:
        grid: Eigenvalue grid, a NumPy array.
        density: Density on the grid (integrates to 1 over it).
        nodes: Quadrature nodes (Ritz values), one row per probe.
        weights: Quadrature weights (each row sums to 1), one row per probe.
        bandwidth: Standard deviation of the Gaussian kernel that smooths
            the nodes (formerly `sigma`, still readable with a warning).

    Example:

    ```python
    import matplotlib.pyplot as plt
    plt.semilogy(result.grid, result.density + 1e-8)
    ```
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    bandwidth: float

    sigma = renamed_attribute("sigma", "bandwidth")

    def mean(self):
        """The mean eigenvalue of the estimated spectrum, tr(H)/d."""
        return float(np.mean(np.sum(self.nodes * self.weights, axis=1)))


SpectralDensity.__init__ = renamed_arguments(sigma="bandwidth")(SpectralDensity.__init__)


def stochastic_lanczos_quadrature(matvec, dimension, num_probes, steps, start_vectors):
    """Nodes and weights of Gauss quadrature for the spectral measure.

    For a unit probe v, `vᵀ f(H) v ≈ Σ_j w_j f(θ_j)` with θ_j the Ritz values
    of `steps` Lanczos steps from v and w_j the squared first components of
    the tridiagonal's eigenvectors; averaged over random probes this
    estimates `tr f(H) / d`.

    Returns:
        `(nodes, weights)`, arrays of shape `(num_probes, steps)` (rows of
        probes whose Krylov space ended early are padded with zero weights).
    """
    return drive(quadrature_steps(dimension, num_probes, steps, start_vectors), matvec)


def quadrature_steps(dimension, num_probes, steps, start_vectors):
    """`stochastic_lanczos_quadrature` as a generator of products (see `drive`)."""
    steps = min(steps, dimension)
    nodes = np.zeros((num_probes, steps))
    weights = np.zeros((num_probes, steps))
    for p in range(num_probes):
        run = Lanczos(None, start_vectors[p], capacity=steps + 1)
        while len(run.alpha) < steps and not run.exhausted:
            run.advance((yield run.vector()))
        m = len(run.alpha)
        values, s = np.linalg.eigh(run.tridiagonal())
        nodes[p, :m] = values
        weights[p, :m] = s[0, :] ** 2 / np.sum(s[0, :] ** 2)
        if m < steps:
            nodes[p, m:] = values[-1]
    return nodes, weights


def _trapezoid(y, x):
    integrate = getattr(np, "trapezoid", None) or np.trapz
    return float(integrate(y, x))


def smooth(nodes, weights, grid_size, bandwidth=None, padding=6.0):
    """Gaussian-smoothed density of weighted nodes on an even grid.

    Returns:
        `(grid, density, bandwidth)`.
    """
    low, high = float(np.min(nodes)), float(np.max(nodes))
    if bandwidth is None:
        bandwidth = max(0.01 * (high - low), 1e-6 * max(abs(low), abs(high), 1.0))
    grid = np.linspace(low - padding * bandwidth, high + padding * bandwidth, grid_size)
    flat_nodes, flat_weights = nodes.ravel(), weights.ravel() / nodes.shape[0]
    kernel = np.exp(-0.5 * ((grid[:, None] - flat_nodes[None, :]) / bandwidth) ** 2)
    density = kernel @ flat_weights / (bandwidth * np.sqrt(2 * np.pi))
    density = density / _trapezoid(density, grid)
    return grid, density, bandwidth
