"""Argument types and renamed flags shared by every `keras-flat` subcommand.

One rule for numbers: a value must parse, be finite (`inf` and `nan` are
rejected wherever a number is needed: a learning rate, a radius or an
extent of `inf` is never meant) and lie in the stated range. Error messages
name the value as given.

A renamed flag keeps its old spelling for one release: `add_renamed_flag`
adds the old option string, which works as the new one and prints a
deprecation note naming both; `--help` lists it only at the end, under the
deprecated spellings.
"""

import argparse
import math
import sys
import textwrap

from keras_flat.utils import deprecation


def int_at_least(minimum):
    """An argparse `type`: an integer >= `minimum`."""
    def parse(text):
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def float_above(minimum, inclusive=False):
    """An argparse `type`: a finite number > `minimum` (>= with `inclusive`)."""
    relation = ">=" if inclusive else ">"
    kind = f"a finite number {relation} {minimum:g}"

    def parse(text):
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        if not math.isfinite(value) or not (value >= minimum if inclusive else value > minimum):
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}")
        return value

    parse.__name__ = kind
    return parse


positive_float = float_above(0.0)
non_negative_float = float_above(0.0, inclusive=True)


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, never breaking a line inside a flag (`--output-` / `dir`)."""

    def _fill_text(self, text, width, indent):
        text = self._whitespace_matcher.sub(" ", text).strip()
        return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False)


class _RenamedFlag(argparse.Action):
    """The old spelling of a flag: warns, then does what the new one does."""

    def __init__(self, option_strings, dest, target=None, **kwargs):
        self.target = target
        super().__init__(option_strings, dest, nargs=target.nargs, const=target.const,
                         default=argparse.SUPPRESS, type=target.type, choices=target.choices,
                         metavar=target.metavar, help=argparse.SUPPRESS)

    def __call__(self, parser, namespace, values, option_string=None):
        new = self.target.option_strings[-1]
        print(f"{parser.prog}: warning: {option_string} is deprecated and will be removed in "
              f"{deprecation.REMOVAL}; use {new} instead.", file=sys.stderr)
        self.target(parser, namespace, values, new)


def add_renamed_flag(parser, old, new):
    """Accepts `old` as a deprecated spelling of the existing flag `new`.

    The old flag is left out of the usage line and the list of options
    (the help's last lines name it with its replacement), takes the same
    values (type, choices, number of values) and stores into the same
    destination; using it prints a note to standard error naming both.

    Args:
        parser: The `argparse.ArgumentParser` that already has `new`.
        old: The old option string, e.g. `"--out"`.
        new: The current option string, e.g. `"--output-dir"`.

    Returns:
        The hidden action.
    """
    target = parser._option_string_actions[new]  # argparse keeps no public index.
    action = parser.add_argument(old, dest=target.dest, action=_RenamedFlag, target=target)
    renamed = getattr(parser, "_renamed_flags", []) + [f"{old} (now {new})"]
    parser._renamed_flags = renamed
    if parser.formatter_class is argparse.HelpFormatter:
        parser.formatter_class = _Formatter
    parser.epilog = ("Deprecated spellings, to be removed in " + deprecation.REMOVAL + ": "
                     + ", ".join(renamed) + ".")
    return action
