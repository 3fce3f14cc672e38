"""Helpers shared by the example scripts (output folders, tables, JSON)."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def output_dir(path):
    os.makedirs(path, exist_ok=True)
    return path


def markdown_table(rows, columns, digits=4):
    """Rows (dicts) as a Markdown table; floats with `digits` significant digits."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{v:.{digits}g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(directory, name, table, results):
    """Writes `<name>.md` (the table) and `<name>.json` (all numbers)."""
    with open(os.path.join(directory, f"{name}.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(directory, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)
    print(table)
    print(f"\nWrote {os.path.join(directory, name)}.md, .json and .png")
