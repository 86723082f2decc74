"""Command-line flags that several scripts share, and the typed options they become.

The face-finding flags of ``inf_demo.py`` and ``preparation/bbx_extract.py``: ``add_tracking_args``
declares them, ``tracking_options`` reads them into ``face_detection.tracking.TrackingOptions`` (the
library takes only that). Value types and the ignored compatibility flags are in ``utils.cli``.
"""
import argparse

from face_detection.tracking import (DEFAULT_DETECT_EVERY, DEFAULT_DETECT_MAX_SIDE, DEFAULT_FACE_PX, DEFAULT_MAX_GAP_S,
                                     KEY_STRETCH, TrackingOptions, parse_follow)
from utils.cli import non_negative_float, non_negative_int, positive_int


def add_tracking_args(parser: argparse.ArgumentParser, smooth_window: int, dubbing: bool) -> None:
    """The face-finding flags: the dub's (``dubbing``: face scale, key-frame stretch, gaps, whom to follow)
    or preprocessing's (key frames at --detect_max_side: its boxes train the model)."""
    parser.add_argument("--detect_every", type=positive_int, default=DEFAULT_DETECT_EVERY,
                        help="run the face detector on every K-th frame and interpolate between; frames "
                             "between key frames that disagree are detected too (1: every frame, as the original)")
    parser.add_argument("--detect_max_side", type=non_negative_int, default=DEFAULT_DETECT_MAX_SIDE,
                        help="detect on a copy scaled down to this longest side in pixels, boxes mapped back "
                             "(0: full resolution, as the original)")
    if dubbing:
        parser.add_argument("--detect_face_px", type=non_negative_int, default=DEFAULT_FACE_PX,
                            help="while a face is followed, detect on a copy where its shorter side is about "
                                 "this many pixels (0: always at --detect_max_side)")
        parser.add_argument("--no_detect_stretch", dest="detect_stretch", action="store_false",
                            help=f"keep key frames --detect_every apart (default: up to {KEY_STRETCH}x that "
                                 f"while the face moves smoothly)")
    parser.add_argument("--smooth_window", type=positive_int, default=smooth_window,
                        help="average face boxes over N frames within a shot (1: off)")
    if dubbing:
        parser.add_argument("--max_gap", type=non_negative_float, default=DEFAULT_MAX_GAP_S,
                            help="seconds: frames without the face for longer than this pass through "
                                 "untouched (a cutaway, a hand); shorter gaps are interpolated")
        parser.add_argument("--follow", default="largest",
                            help="with several faces, whom to dub: 'largest', or 'X,Y' for the face nearest "
                                 "that pixel; the chosen face is then followed from frame to frame")


def tracking_options(args: argparse.Namespace, dubbing: bool) -> TrackingOptions:
    """TrackingOptions from the flags ``add_tracking_args`` declared (with the same ``dubbing``); without
    the dub's flags: no gap limit, no face scale, no stretch, the largest face."""
    if not dubbing:
        return TrackingOptions(detect_every=args.detect_every, detect_max_side=args.detect_max_side,
                               max_gap_s=None, smooth_window=args.smooth_window, face_px=0, stretch=False)
    return TrackingOptions(detect_every=args.detect_every, detect_max_side=args.detect_max_side,
                           max_gap_s=args.max_gap, smooth_window=args.smooth_window, face_px=args.detect_face_px,
                           stretch=args.detect_stretch, follow=parse_follow(args.follow))
