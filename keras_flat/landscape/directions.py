"""Directions in weight space: the axes of a loss-landscape plot."""

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass
class Directions:
    """k directions in the space of a model's trainable weights.

    Each row of `vectors` is one direction, flattened in the order of
    `model.trainable_variables` (the order `keras_flat.hessian` uses), so
    `w + alpha * vectors[0] + beta * vectors[1]` is a point of a 2D plot.

    Attributes:
        vectors: A `(k, d)` float32 array.
        kind: Where they come from: `"random"`, `"eigen"`, `"pca"` or
            `"custom"`.
        names: The variable paths, in order.
        shapes: The variable shapes, in order.
        values: For `"eigen"`, the eigenvalues; for `"pca"`, the explained
            variance ratios; otherwise None.

    Example:

    ```python
    dirs = keras_flat.landscape.random_directions(model, num_directions=2, seed=0)
    kernel_part = dirs.unflatten(0)[0]   # the first direction's first variable
    ```
    """

    vectors: np.ndarray
    kind: str
    names: list
    shapes: list
    values: Optional[np.ndarray] = None

    def __len__(self):
        return len(self.vectors)

    @property
    def dimension(self):
        return int(self.vectors.shape[1])

    def unflatten(self, index):
        """Direction `index` as a list of arrays shaped like the variables."""
        out, start = [], 0
        for shape in self.shapes:
            size = int(np.prod(shape))
            out.append(self.vectors[index, start:start + size].reshape(shape))
            start += size
        return out

    def norms(self):
        """The whole-vector norm of each direction, a `(k,)` array."""
        return np.linalg.norm(self.vectors.astype(np.float64), axis=1)


def as_directions(directions, model, argument="directions", count=None):
    """Coerces `directions` to `Directions` for `model`.

    Args:
        directions: A `Directions`; a `(k, d)` or `(d,)` array; a list of
            arrays shaped like the trainable variables (one direction); or a
            list of k such lists.
        model: The model whose trainable variables the directions move.
        argument: Name used in error messages.
        count: If given, the number of directions required (the first
            `count` rows of a larger `Directions` are used).

    Returns:
        A `Directions`.
    """
    variables = model.trainable_variables
    names = [getattr(v, "path", v.name) for v in variables]
    shapes = [tuple(int(s) for s in v.shape) for v in variables]
    dimension = int(sum(np.prod(s) for s in shapes))
    kind, values = "custom", None
    if isinstance(directions, Directions):
        kind, values, vectors = directions.kind, directions.values, directions.vectors
    elif (isinstance(directions, (list, tuple)) and directions
          and isinstance(directions[0], (list, tuple))):
        vectors = np.stack([_flatten_parts(d, shapes, argument) for d in directions])
    elif _is_one_direction(directions, shapes):
        vectors = _flatten_parts(directions, shapes, argument)[None, :]
    else:
        vectors = np.asarray(directions)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] != dimension or len(vectors) == 0:
        raise ValueError(
            f"Argument `{argument}` must hold directions of the model's {dimension} "
            f"trainable parameters (a Directions, a (k, {dimension}) array or lists of "
            f"arrays shaped like the trainable variables). Received shape "
            f"{getattr(vectors, 'shape', None)}."
        )
    if not np.issubdtype(vectors.dtype, np.number) or not np.all(np.isfinite(vectors)):
        raise ValueError(f"Argument `{argument}` must hold finite numbers.")
    if count is not None:
        if len(vectors) < count:
            raise ValueError(
                f"Argument `{argument}` must hold at least {count} direction(s). "
                f"Received {len(vectors)}."
            )
        vectors = vectors[:count]
        values = None if values is None else np.asarray(values)[:count]
    return Directions(vectors=vectors.astype(np.float32), kind=kind, names=names,
                      shapes=shapes, values=values)


def _is_one_direction(value, shapes):
    """True for a list of arrays shaped like the variables (one direction)."""
    if not isinstance(value, (list, tuple)) or len(value) != len(shapes):
        return False
    return all(tuple(np.shape(part)) == shape for part, shape in zip(value, shapes))


def _flatten_parts(parts, shapes, argument):
    if len(parts) != len(shapes):
        raise ValueError(
            f"Argument `{argument}`: each direction must hold {len(shapes)} arrays (one per "
            f"trainable variable). Received {len(parts)}."
        )
    flat = []
    for part, shape in zip(parts, shapes):
        part = np.asarray(part)
        if tuple(part.shape) != shape:
            raise ValueError(
                f"Argument `{argument}`: an array of shape {tuple(part.shape)} where the "
                f"variable has shape {shape}."
            )
        flat.append(part.ravel())
    return np.concatenate(flat)
