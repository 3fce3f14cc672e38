"""Internal utilities (vector arithmetic, random numbers, checks, Keras hooks).

Not part of the public API: they may change in any release.
"""
