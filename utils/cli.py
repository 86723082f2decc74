"""argparse value types shared by the scripts: they refuse bad values with argparse's one-line usage error.

Every numeric flag of every script takes one of these (a test checks), so a value that would fail deep
inside (a zero batch, a negative gap, ``nan``) is refused where it is parsed.
"""
import argparse
import math
from typing import Callable, Tuple


def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _checked(kind, name: str, accept: Callable = lambda value: True, complaint: str = ""):
    """A parser of ``kind`` (int or float) values for which ``accept`` holds; ``complaint`` is formatted
    with the value (``{value}``) when it does not."""
    def parse(text: str):
        value = _number(text, kind)
        if not accept(value):
            raise argparse.ArgumentTypeError(complaint.format(value=value))
        return value
    parse.__name__ = name                  # argparse names the type in its messages
    return parse


positive_int = _checked(int, "positive_int", lambda v: v >= 1, "{value} is not positive: give 1 or more")
non_negative_int = _checked(int, "non_negative_int", lambda v: v >= 0, "{value} is negative: give 0 or more")
any_int = _checked(int, "any_int")                   # a value whose sign means something
positive_float = _checked(float, "positive_float", lambda v: v > 0, "{value:g} is not positive: give a number above 0")
non_negative_float = _checked(float, "non_negative_float", lambda v: v >= 0, "{value:g} is negative: give 0 or more")
any_float = _checked(float, "any_float")             # a mean, a length penalty
fraction = _checked(float, "fraction", lambda v: 0 < v < 1, "{value:g} is not between 0 and 1")


def int_at_least(lowest: int, why: str = ""):
    """An integer >= ``lowest``; ``why`` (optional) says where the bound comes from."""
    return _checked(int, f"int>={lowest}", lambda v: v >= lowest, f"{{value}} is below {lowest}: give {lowest} or more{why}")


def int_in_range(lowest: int, highest: int):
    """An integer from ``lowest`` to ``highest``."""
    return _checked(int, f"int{lowest}..{highest}", lambda v: lowest <= v <= highest,
                    f"{{value}} is outside {lowest}..{highest}")


def number_in_range(lowest: float, highest: float):
    """A number from ``lowest`` to ``highest``."""
    return _checked(float, f"number{lowest:g}..{highest:g}", lambda v: lowest <= v <= highest,
                    f"{{value:g}} is outside {lowest:g}..{highest:g}")


def fraction_below(limit: float):
    """A number in [0, limit)."""
    return _checked(float, f"fraction<{limit:g}", lambda value: 0.0 <= value < limit,
                    f"{{value:g}} is not in [0, {limit:g}): give a fraction from 0 to below {limit:g}")


def per_stage(count: int):
    """A comma-separated list of ``count`` non-negative integers, or one integer for every item."""
    def parse(text: str) -> Tuple[int, ...]:
        values = tuple(non_negative_int(v.strip()) for v in text.split(","))
        if len(values) == 1:
            values = values * count
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"{text!r} needs {count} comma-separated values (one per stage) or one")
        return values
    return parse


def path_list(text: str) -> Tuple[str, ...]:
    """A comma-separated list of file paths (empty items dropped)."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


# Flags of the original scripts that do nothing here, declared once: each script accepts them (so the
# original's command lines run) and says once that they are ignored.
IGNORED_FLAGS = {"avhubert_root": "AV-HuBERT is built into talklip"}
IGNORED_HELP = "ignored: AV-HuBERT is built in"


def add_ignored_flags(parser: argparse.ArgumentParser) -> None:
    for name in IGNORED_FLAGS:
        parser.add_argument(f"--{name}", default=None, help=IGNORED_HELP)


def note_ignored_flags(args) -> None:
    """Say on stderr which of the IGNORED_FLAGS were given."""
    import sys
    for name, why in IGNORED_FLAGS.items():
        if getattr(args, name, None):
            print(f"note: --{name} is ignored; {why}", file=sys.stderr)


def add_device_arg(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """The one ``--device`` flag of every script."""
    from utils.device import DEVICE_HELP
    parser.add_argument("--device", default=default, help=f"where models run: {DEVICE_HELP}")
