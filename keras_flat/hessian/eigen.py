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


def drive(steps, matvec):
    """Runs an algorithm written as a generator of products with a function `matvec`.

    `steps` yields each vector it needs multiplied by H, receives `H·v`
    (by `send`), and returns its result; see `lanczos_top_steps`. The same
    generator can instead be driven from inside one compiled function, so
    that its products share the recorded passes of the batch (see
    `keras_flat.hessian.compiled.CompiledHessian.drive`).
    """
    try:
        v = next(steps)
        while True:
            v = steps.send(matvec(v))
    except StopIteration as done:
        return done.value


class Lanczos:
    """Lanczos with full reorthogonalisation, one step at a time.

    The basis is kept in one preallocated array (its capacity doubles when
    full), and each step reorthogonalises the new vector against the
    existing rows in place, so a step costs what its reorthogonalisation
    needs and nothing is rebuilt.

    Args:
        matvec: Function mapping a float64 vector to H times it (only for
            `step`; `vector` and `advance` step without it).
        start: Non-zero starting vector.
    """

    def __init__(self, matvec, start, capacity=16):
        q = np.asarray(start, np.float64).ravel()
        self.matvec = matvec
        self._rows = np.empty((max(2, capacity), q.size))
        self._rows[0] = q / np.linalg.norm(q)
        self.size = 1
        self.alpha, self.beta = [], []
        self.exhausted = False

    @property
    def basis(self):
        """The Lanczos vectors so far, rows of a `(m, d)` array (a view)."""
        return self._rows[: self.size]

    def vector(self):
        """The vector whose product `advance` expects next."""
        return self._rows[len(self.alpha)]

    def step(self):
        """Adds one Lanczos vector; sets `exhausted` when the Krylov space ends."""
        self.advance(self.matvec(self.vector()))

    def advance(self, product):
        """Adds one Lanczos vector from `product`, H times `vector()`."""
        j = len(self.alpha)
        w = np.array(product, np.float64).ravel()
        q = self._rows[j]
        a = float(w @ q)
        self.alpha.append(a)
        w -= a * q
        if j > 0:
            w -= self.beta[j - 1] * self._rows[j - 1]
        basis = self.basis
        norm = float(np.linalg.norm(w))
        for _ in range(2):  # Twice is enough (Kahan-Parlett), once is usually.
            w -= basis.T @ (basis @ w)
            before, norm = norm, float(np.linalg.norm(w))
            if norm > 0.5 * before:  # Little cancellation: orthogonal to working precision.
                break
        self.beta.append(norm)
        if norm <= 1e-10 * max(1.0, float(np.max(np.abs(self.alpha)))):
            self.exhausted = True
            return
        if self.size == len(self._rows):
            grown = np.empty((2 * len(self._rows), self._rows.shape[1]))
            grown[: self.size] = self._rows
            self._rows = grown
        self._rows[self.size] = w / norm
        self.size += 1

    def tridiagonal(self):
        """The `(m, m)` tridiagonal matrix T of the steps so far."""
        m = len(self.alpha)
        off = self.beta[: m - 1]
        return np.diag(self.alpha) + np.diag(off, 1) + np.diag(off, -1)

    def ritz(self):
        """Ritz values (increasing), Ritz vectors (rows) and residual bounds.

        The residual bound of a Ritz pair is `beta_m * |last component|`, an
        upper bound on `‖H u - θ u‖`, so it needs no extra product.
        """
        m = len(self.alpha)
        values, s = np.linalg.eigh(self.tridiagonal())
        residuals = abs(self.beta[m - 1]) * np.abs(s[m - 1, :])
        if self.exhausted:
            residuals = np.zeros_like(residuals)
        return values, s.T @ self._rows[:m], residuals


def lanczos_top(matvec, dimension, k, max_iterations, tol, start):
    """The k algebraically largest eigenpairs by Lanczos.

    Steps until every top-k Ritz pair has residual bound at most
    `tol * |value|`, the Krylov space is exhausted, or `max_iterations`
    products have been used.

    Returns:
        `(values, vectors, matvecs_used, converged)`.
    """
    return drive(lanczos_top_steps(dimension, k, max_iterations, tol, start), matvec)


def lanczos_top_steps(dimension, k, max_iterations, tol, start):
    """`lanczos_top` as a generator of products (see `drive`)."""
    run = Lanczos(None, start)
    budget = min(dimension, max_iterations)
    while True:
        run.advance((yield run.vector()))
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
    return drive(power_top_steps(k, max_iterations, tol, start_block), matvec)


def power_top_steps(k, max_iterations, tol, start_block):
    """`power_top` as a generator of products (see `drive`)."""
    block, _ = np.linalg.qr(np.asarray(start_block, np.float64).T)
    previous, values, vectors, used = None, None, block.T, 0
    while used + k <= max_iterations:
        product = np.empty_like(block)
        for i in range(k):
            product[:, i] = np.asarray((yield block[:, i]), np.float64).ravel()
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
