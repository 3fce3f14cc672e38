"""Writes result tables as CSV files."""

import csv
import os

import numpy as np


def write_csv(path, columns):
    """Writes equal-length columns to a CSV file with a header row.

    Args:
        path: File to write; its directory is created if needed.
        columns: A dict from column name to a 1-D array or list.

    Returns:
        `path`.
    """
    names = list(columns)
    arrays = [np.asarray(columns[name]).reshape(-1) for name in names]
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"Columns of different lengths: {dict(zip(names, map(len, arrays)))}.")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for row in zip(*arrays):
            writer.writerow([_cell(v) for v in row])
    return path


def _cell(value):
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value
