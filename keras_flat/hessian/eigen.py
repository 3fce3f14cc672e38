"""Top Hessian eigenvalues by Lanczos or power (subspace) iteration."""

import dataclasses

import numpy as np

EIGEN_METHODS = ("lanczos", "power")


@dataclasses.dataclass
class EigenResult:
    """The top eigenpairs of a Hessian.

    Attributes:
        values: The k largest eigenvalues, in decreasing order (NumPy array).
        vectors: Their unit eigenvectors as rows of a `(k, d)` NumPy array, in
            the flattened order of `model.trainable_variables`; pass them as
            `initial_vectors` to warm-start the next call.
        iterations: Hessian-vector products used.
        converged: Whether the relative change of every value fell below the
            tolerance before the iteration budget ran out.
    """

    values: np.ndarray
    vectors: np.ndarray
    iterations: int
    converged: bool


class Lanczos:
    """Lanczos with full reorthogonalisation, one step at a time.

    Args:
        matvec: Function mapping a float64 vector to H times it.
        start: Non-zero starting vector.
    """

    def __init__(self, matvec, start):
        q = np.asarray(start, np.float64)
        self.matvec = matvec
        self.basis = [q / np.linalg.norm(q)]
        self.alpha, self.beta = [], []
        self.exhausted = False

    def step(self):
        """Adds one Lanczos vector; sets `exhausted` when the Krylov space ends."""
        j = len(self.alpha)
        w = np.asarray(self.matvec(self.basis[j]), np.float64)
        self.alpha.append(float(w @ self.basis[j]))
        stacked = np.array(self.basis)
        for _ in range(2):  # Twice is enough (Kahan-Parlett).
            w = w - stacked.T @ (stacked @ w)
        b = float(np.linalg.norm(w))
        self.beta.append(b)
        if b <= 1e-10 * max(1.0, float(np.max(np.abs(self.alpha)))):
            self.exhausted = True
        else:
            self.basis.append(w / b)

    def ritz(self):
        """Ritz values (increasing), Ritz vectors (rows) and residual bounds.

        The residual bound of a Ritz pair is `beta_m * |last component|`, an
        upper bound on `‖H u - θ u‖`, so it needs no extra product.
        """
        m = len(self.alpha)
        off = self.beta[: m - 1]
        t = np.diag(self.alpha) + np.diag(off, 1) + np.diag(off, -1)
        values, s = np.linalg.eigh(t)
        residuals = abs(self.beta[m - 1]) * np.abs(s[m - 1, :])
        if self.exhausted:
            residuals = np.zeros_like(residuals)
        return values, s.T @ np.array(self.basis[:m]), residuals


def lanczos_top(matvec, dimension, k, max_iterations, tol, start):
    """The k algebraically largest eigenpairs by Lanczos.

    Steps until every top-k Ritz pair has residual bound at most
    `tol * |value|`, the Krylov space is exhausted, or `max_iterations`
    products have been used.

    Returns:
        `(values, vectors, matvecs_used, converged)`.
    """
    run = Lanczos(matvec, start)
    budget = min(dimension, max_iterations)
    while True:
        run.step()
        m = len(run.alpha)
        if run.exhausted and m < k:
            # The start vector's Krylov space holds fewer than k eigenpairs
            # (e.g. H is a multiple of the identity): those are all there is.
            values, vectors, _ = run.ritz()
            return values[::-1], vectors[::-1], m, True
        if m >= k and (run.exhausted or m >= budget or m % 2 == 0):
            values, vectors, residuals = run.ritz()
            top = slice(None, None, -1)
            values, vectors, residuals = values[top][:k], vectors[top][:k], residuals[top][:k]
            converged = bool(np.all(residuals <= tol * np.maximum(np.abs(values), 1e-12)))
            if converged or run.exhausted or m >= budget:
                return values, vectors, m, converged or run.exhausted


def power_top(matvec, k, max_iterations, tol, start_block):
    """The k largest-magnitude eigenpairs by subspace iteration with Rayleigh-Ritz.

    Args:
        matvec: Function mapping a float64 vector to H times it.
        k: Number of eigenpairs.
        max_iterations: Budget of Hessian-vector products (>= k).
        tol: Relative change of every Ritz value that counts as converged.
        start_block: `(k, d)` array of starting vectors.

    Returns:
        `(values, vectors, matvecs_used, converged)`.
    """
    block, _ = np.linalg.qr(np.asarray(start_block, np.float64).T)
    previous, values, vectors, used = None, None, block.T, 0
    while used + k <= max_iterations:
        product = np.stack([np.asarray(matvec(block[:, i]), np.float64)
                            for i in range(k)], axis=1)
        used += k
        small = block.T @ product
        values, s = np.linalg.eigh((small + small.T) / 2)
        order = np.argsort(-np.abs(values))
        values, s = values[order], s[:, order]
        vectors = (block @ s).T
        if previous is not None:
            change = np.abs(values - previous) / np.maximum(np.abs(values), 1e-12)
            if np.all(change <= tol):
                return values, vectors, used, True
        previous = values
        block, _ = np.linalg.qr(product @ s)
    return values, vectors, used, False
