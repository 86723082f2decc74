"""argparse value types shared by the scripts: they refuse bad values with argparse's one-line usage error."""
import argparse
from typing import Tuple


def positive_int(text: str) -> int:
    """An integer >= 1 (batch sizes, chunk lengths, intervals)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive: give 1 or more")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: give 0 or more")
    return value


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
