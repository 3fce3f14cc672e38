"""Speed and memory benchmarks of keras-flat against plain Keras training.

Each script prints ratios to plain Keras measured in the same run; run one
with `python -m benchmarks.<name>` from the repository root.
"""
