"""The training step: `FlatMinimaModel` and what it hands an update rule."""
