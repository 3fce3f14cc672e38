"""Loss-landscape plots of any built, compiled Keras 3 model.

- `interpolate`: the loss between two models (Goodfellow et al., 2015).
- `random_directions`: filter-normalised random directions (Li et al.,
  2018); `describe_parameters` says what a filter is for each layer.
- `eigen_directions`: the top Hessian eigenvectors (from
  `keras_flat.hessian.top_eigenvalues`).
- `surface_1d`, `surface_2d`: the loss on a line or a plane through the
  weights.
- `TrajectoryRecorder`, `trajectory_pca`: the training path on the plane of
  its two principal directions.
- `plot_1d`, `plot_contour`, `plot_trajectory`, `plot_comparison`:
  matplotlib figures (PNG); `compare_minima` puts several minima of one
  architecture on one scale.

Every evaluation is stateless (no variable of the model changes: weights,
BatchNorm statistics, metric states and seeds stay as they were), runs with
BatchNorm in inference mode unless `training=True`, and evaluates all the
points of a line or grid in one compiled call. The compiled functions take
the data as arguments and are kept per model and options, so repeated calls
on the same model (with data of the same shapes) trace once. Under a `tf.distribute`
strategy's scope the points are divided between the replicas. Results are
small dataclasses of NumPy arrays with a `to_csv` method.

Example:

```python
from keras_flat import landscape

dirs = landscape.random_directions(model, num_directions=2, seed=0)
plane = landscape.surface_2d(model, (x, y), dirs, extent=1.0, resolution=21)
landscape.plot_contour(plane, "plane.png")
plane.to_csv("plane.csv")
```
"""

from keras_flat.landscape.directions import Directions
from keras_flat.landscape.eigen import eigen_directions
from keras_flat.landscape.evaluator import Evaluator
from keras_flat.landscape.interpolate import interpolate
from keras_flat.landscape.minima import compare_minima
from keras_flat.landscape.plot import plot_1d
from keras_flat.landscape.plot import plot_comparison
from keras_flat.landscape.plot import plot_contour
from keras_flat.landscape.plot import plot_trajectory
from keras_flat.landscape.random_directions import NORMALIZATIONS
from keras_flat.landscape.random_directions import random_directions
from keras_flat.landscape.surface import Surface1D
from keras_flat.landscape.surface import Surface2D
from keras_flat.landscape.surface import surface_1d
from keras_flat.landscape.surface import surface_2d
from keras_flat.landscape.trajectory import TrajectoryPCA
from keras_flat.landscape.trajectory import TrajectoryRecorder
from keras_flat.landscape.trajectory import trajectory_pca
from keras_flat.utils.structure import Parameter
from keras_flat.utils.structure import describe_parameters

__all__ = [
    "Directions",
    "Evaluator",
    "NORMALIZATIONS",
    "Parameter",
    "Surface1D",
    "Surface2D",
    "TrajectoryPCA",
    "TrajectoryRecorder",
    "describe_parameters",
    "eigen_directions",
    "compare_minima",
    "interpolate",
    "plot_comparison",
    "plot_1d",
    "plot_contour",
    "plot_trajectory",
    "random_directions",
    "surface_1d",
    "surface_2d",
    "trajectory_pca",
]
