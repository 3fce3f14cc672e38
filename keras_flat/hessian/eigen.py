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


# Above this dimension Lanczos reorthogonalises only when the basis loses
# semi-orthogonality (partial reorthogonalisation); below it, at every step.
PARTIAL_ABOVE = 20_000
_EPS = float(np.finfo(np.float64).eps)


class Lanczos:
    """Lanczos with reorthogonalisation, one step at a time.

    The basis is kept in preallocated blocks of rows (a new block, as large
    as the basis so far, when full) and nothing is rebuilt or copied at a
    step; the work vectors are allocated once. Each step runs the three-term
    recurrence, then reorthogonalises against the whole basis:

    - fully (classical Gram-Schmidt, repeated once on cancellation) at
      every step for `partial=False`;
    - only when needed for `partial=True` (Simon's partial
      reorthogonalisation, 1984): a recurrence estimates, at the cost of
      a few scalars, how far the new vector is from orthogonal to each
      previous one, and when some estimate exceeds sqrt(eps) the vector
      (and the next one) is reorthogonalised against the whole basis.
      Semi-orthogonality (sqrt(eps)) is enough for the Ritz values to be
      as accurate as with full reorthogonalisation; most steps then cost a
      few passes over one vector instead of two over the basis, which
      dominates for large models whose products are cheap.

    Args:
        matvec: Function mapping a float64 vector to H times it (only for
            `step`; `vector` and `advance` step without it).
        start: Non-zero starting vector.
        capacity: Rows allocated at first.
        partial: Partial reorthogonalisation; default when the dimension
            exceeds `PARTIAL_ABOVE`.
    """

    def __init__(self, matvec, start, capacity=16, partial=None):
        q = np.asarray(start, np.float64).ravel()
        self.matvec = matvec
        self._blocks = [np.empty((max(2, capacity), q.size))]
        self._blocks[0][0] = q / np.linalg.norm(q)
        self.size = 1
        self.alpha, self.beta = [], []
        self.exhausted = False
        self.partial = q.size > PARTIAL_ABOVE if partial is None else bool(partial)
        self.reorthogonalisations = 0
        self._omega = [np.ones(1)]  # omega[j][k]: estimate of q_j . q_k.
        self._again = False
        # Work vectors, allocated once: fresh memory costs page faults at every step.
        self._w, self._scratch = np.empty(q.size), np.empty(q.size)

    def _filled(self):
        """The basis's blocks of rows, trimmed to the rows in use."""
        out, left = [], self.size
        for block in self._blocks:
            out.append(block[: min(left, len(block))])
            left -= len(out[-1])
            if left <= 0:
                break
        return out

    def _row(self, i):
        for block in self._blocks:
            if i < len(block):
                return block[i]
            i -= len(block)
        raise IndexError(i)

    @property
    def basis(self):
        """The Lanczos vectors so far, rows of a `(m, d)` array."""
        blocks = self._filled()
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)

    def vector(self):
        """The vector whose product `advance` expects next."""
        return self._row(len(self.alpha))

    def step(self):
        """Adds one Lanczos vector; sets `exhausted` when the Krylov space ends."""
        self.advance(self.matvec(self.vector()))

    def _subtract(self, w, factor, q):
        np.multiply(q, factor, out=self._scratch)
        np.subtract(w, self._scratch, out=w)

    def advance(self, product):
        """Adds one Lanczos vector from `product`, H times `vector()`."""
        j = len(self.alpha)
        w = self._w
        np.copyto(w, np.asarray(product).ravel(), casting="unsafe")
        q = self._row(j)
        a = float(w @ q)
        self._subtract(w, a, q)
        if j > 0:
            self._subtract(w, self.beta[j - 1], self._row(j - 1))
        correction = float(w @ q)  # Local reorthogonalisation: one more pass, cheap.
        self._subtract(w, correction, q)
        a += correction
        self.alpha.append(a)
        norm = float(np.sqrt(w @ w))
        if self.partial:
            norm = self._partial(w, norm)
        else:
            norm = self._full(w, norm)
        self.beta.append(norm)
        if norm <= 1e-10 * max(1.0, float(np.max(np.abs(self.alpha)))):
            self.exhausted = True
            return
        if self.size == sum(len(b) for b in self._blocks):  # Full: a new block, nothing copied.
            self._blocks.append(np.empty((self.size, w.size)))
        np.divide(w, norm, out=self._row(self.size))
        self.size += 1

    def _full(self, w, norm):
        """Reorthogonalises `w` against the basis in place; returns its norm."""
        for _ in range(2):  # Twice is enough (Kahan-Parlett), once is usually.
            for block in self._filled():  # Classical Gram-Schmidt, block by block.
                np.dot(block @ w, block, out=self._scratch)
                np.subtract(w, self._scratch, out=w)
            before, norm = norm, float(np.sqrt(w @ w))
            self.reorthogonalisations += 1
            if norm > 0.5 * before:  # Little cancellation: orthogonal to working precision.
                break
        return norm

    def _partial(self, w, norm):
        """Simon's estimates of `w / norm` against the basis; reorthogonalises when needed."""
        j = len(self.alpha) - 1  # w will become q_{j+1}.
        alpha, beta = self.alpha, self.beta
        current = self._omega[j]
        estimate = np.zeros(j + 2)
        estimate[j + 1] = 1.0
        if norm > 0:
            previous = self._omega[j - 1] if j > 0 else np.zeros(1)
            for k in range(j):
                value = beta[k] * current[k + 1] + (alpha[k] - alpha[j]) * current[k]
                if k > 0:
                    value += beta[k - 1] * current[k - 1]
                if j > 0 and k < len(previous):
                    value -= beta[j - 1] * previous[k]
                estimate[k] = (value + np.copysign(_EPS * (beta[k] + norm), value)) / norm
            estimate[j] = _EPS * len(w) ** 0.5  # Left by the local reorthogonalisation.
        if self._again or np.max(np.abs(estimate[: j + 1]), initial=0.0) > _EPS ** 0.5:
            self._again = not self._again  # Reorthogonalise this vector and the next one.
            norm = self._full(w, norm)
            estimate[: j + 1] = _EPS
        self._omega.append(estimate)
        return norm

    def tridiagonal(self):
        """The `(m, m)` tridiagonal matrix T of the steps so far."""
        m = len(self.alpha)
        off = self.beta[: m - 1]
        return np.diag(self.alpha) + np.diag(off, 1) + np.diag(off, -1)

    def ritz_values(self):
        """Ritz values (increasing), T's eigenvectors (columns) and residual bounds.

        The residual bound of a Ritz pair is `beta_m * |last component|`, an
        upper bound on `‖H u - θ u‖`, so it needs no extra product.
        """
        m = len(self.alpha)
        values, s = np.linalg.eigh(self.tridiagonal())
        residuals = abs(self.beta[m - 1]) * np.abs(s[m - 1, :])
        if self.exhausted:
            residuals = np.zeros_like(residuals)
        return values, s, residuals

    def ritz(self):
        """Ritz values (increasing), Ritz vectors (rows) and residual bounds."""
        values, s, residuals = self.ritz_values()
        return values, self.ritz_vectors(s), residuals

    def ritz_vectors(self, s):
        """The Ritz vectors (rows) of T's eigenvectors `s` (columns, one row per step)."""
        out, start = np.zeros((s.shape[1], self._w.size)), 0
        for block in self._filled():
            rows = block[: max(0, min(len(block), len(s) - start))]
            out += s[start:start + len(rows)].T @ rows
            start += len(rows)
        return out


def lanczos_top(matvec, dimension, k, max_iterations, tol, start):
    """The k algebraically largest eigenpairs by Lanczos.

    Steps until every top-k Ritz pair has residual bound at most
    `tol * |value|`, the Krylov space is exhausted, or `max_iterations`
    products have been used.

    Returns:
        `(values, vectors, matvecs_used, converged)`.
    """
    return drive(lanczos_top_steps(dimension, k, max_iterations, tol, start), matvec)


def lanczos_top_steps(dimension, k, max_iterations, tol, start, partial=None):
    """`lanczos_top` as a generator of products (see `drive`)."""
    run = Lanczos(None, start, partial=partial)
    budget = min(dimension, max_iterations)
    while True:
        run.advance((yield run.vector()))
        m = len(run.alpha)
        if run.exhausted and m < k:
            # The start vector's Krylov space holds fewer than k eigenpairs
            # (e.g. H is a multiple of the identity): those are all there is.
            values, s, _ = run.ritz_values()
            return values[::-1], run.ritz_vectors(s[:, ::-1]), m, True
        if m >= k and (run.exhausted or m >= budget or m % 2 == 0):
            values, s, residuals = run.ritz_values()
            top = slice(None, -k - 1, -1) if k < m else slice(None, None, -1)
            values, s, residuals = values[top], s[:, top], residuals[top]
            converged = bool(np.all(residuals <= tol * np.maximum(np.abs(values), 1e-12)))
            if converged or run.exhausted or m >= budget:
                return values, run.ritz_vectors(s), m, converged or run.exhausted


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
    """`power_top` as a generator of products (see `drive`).

    The block is kept as orthonormal rows, and orthonormalised by
    Gram-Schmidt (twice), which for a few rows is cheaper than a QR.
    """
    block = _orthonormal_rows(np.array(start_block, np.float64).reshape(k, -1))
    previous, values, vectors, used = None, None, block, 0
    while used + k <= max_iterations:
        product = np.empty_like(block)
        for i in range(k):
            product[i] = np.asarray((yield block[i])).ravel()  # Cast in place.
        used += k
        small = block @ product.T
        values, s = np.linalg.eigh((small + small.T) / 2)
        order = np.argsort(-np.abs(values))
        values, s = values[order], s[:, order]
        vectors = s.T @ block if k > 1 else block * s[0, 0]
        if previous is not None:
            change = np.abs(values - previous) / np.maximum(np.abs(values), 1e-12)
            if np.all(change <= tol):
                return values, vectors, used, True
        previous = values
        block = _orthonormal_rows(s.T @ product if k > 1 else product)
    return values, vectors, used, False


def _orthonormal_rows(rows):
    """Orthonormalises the rows of `rows` in place (Gram-Schmidt, twice); returns them.

    A row dependent on the previous ones (or zero) is replaced by a random
    unit vector orthogonal to them, as a QR's completed basis would be.
    """
    for i in range(len(rows)):
        row = rows[i]
        for _ in range(2):
            if i:
                row -= rows[:i].T @ (rows[:i] @ row)
        norm = float(np.linalg.norm(row))
        if norm <= 1e-300:
            row[:] = np.random.default_rng(i).normal(size=row.shape)
            if i:
                row -= rows[:i].T @ (rows[:i] @ row)
            norm = float(np.linalg.norm(row))
        row /= norm
    return rows
