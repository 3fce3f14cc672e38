"""A frozen copy of the update rules before they were composed from pieces.

`keras_flat/algorithms/{base,sam,random_smoothing,sharpness_aware}.py` as
they were when SAM, ASAM, RS and SA were separate classes, kept unchanged
except for three adaptations to run inside today's `FlatMinimaModel`: no
Keras serialization registration (the names belong to today's classes,
so the then unused `keras` import is gone too),
random streams by number (1 sphere, 2 examples, 3 jitter, 4 sign: the tags
of that time), and the base class derives from today's `keras_flat.algorithms.Algorithm`
(which `FlatMinimaModel` requires; every method it has is overridden here
but `build`, a no-op: the rules of that time kept no state). `tests/test_legacy_presets.py` checks
that today's presets give the very same weights. Never edit these files to
follow a change of the package: the point is that they do not change.
"""
