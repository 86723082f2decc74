"""Generating faces and pasting them back: crops -> generator inputs -> faces -> frames, a chunk at a time.

``render_into`` is the loop both the dub and the test-set synthesis run: each chunk of (frame, face box
or None, audio row) gets its faces generated and pasted in place, then goes to the encoder.
"""
import itertools
import time
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import torch

from dubbing.options import MouthRegion, SynthesisOptions
from face_detection.boxes import crop_face
from models.talklip import FACE_SIZE, TalkLip
from utils.pipeline import StageClock, release_free_memory


TRIM_EVERY_FRAMES = 32        # the heap is trimmed after this many frames (after every 4-frame chunk cost ~10-15%)


def face_inputs(target_crops: np.ndarray, reference_crops: np.ndarray) -> torch.Tensor:
    """(N, 96, 96, 3) uint8 target and reference crops -> (N, 6, 96, 96) float in [0, 1] with the
    lower half of the target zeroed, as the generator expects."""
    target = torch.from_numpy(target_crops).float().permute(0, 3, 1, 2) / 255.0
    reference = torch.from_numpy(reference_crops).float().permute(0, 3, 1, 2) / 255.0
    target[:, :, FACE_SIZE // 2:] = 0.0
    return torch.cat([target, reference], dim=1)


def blend_mask(height: int, width: int, feather: int) -> np.ndarray:
    """(h, w, 1) weights: 1 inside, ramping linearly to 0 over ``feather`` pixels at the edges."""
    if feather <= 0:
        return np.ones((height, width, 1), np.float32)
    ramp = lambda n: np.clip(np.minimum(np.arange(n) + 1, n - np.arange(n)) / float(feather), 0, 1)
    return (np.outer(ramp(height), ramp(width))[..., None]).astype(np.float32)


def mouth_mask(height: int, width: int, region: MouthRegion) -> np.ndarray:
    """(h, w, 1) weights of the generated face over a box of height x width (``MouthRegion``): a product of
    a vertical and a horizontal ramp, exactly 0 outside the region (the frame keeps its own pixels there),
    rising to 1 over the fade inside its top, sides and bottom."""
    fade = max(1.0, region.feather * height)

    def ramp(n: int, start: float, end: float) -> np.ndarray:     # 0 outside [start, end], 1 from fade inside
        x = np.arange(n) + 0.5
        return np.clip(np.minimum(x - start, end - x) / fade, 0.0, 1.0)
    rows = ramp(height, region.top * height, float(height))
    cols = ramp(width, region.side * width, width - region.side * width)
    return np.outer(rows, cols)[..., None].astype(np.float32)


def paste_faces(frames: np.ndarray, boxes: np.ndarray, faces: np.ndarray, feather: int = 0,
                in_place: bool = False, region: Optional[MouthRegion] = None) -> np.ndarray:
    """Write generated faces (N, 96, 96, 3) uint8 into frames inside their boxes (clipped to the
    frame), into copies unless ``in_place``: the whole box, fading into the original over ``feather``
    pixels when given; or, with ``region``, only the mouth region (``mouth_mask``), every other pixel
    of the frame left as it was."""
    out = frames if in_place else frames.copy()
    height, width = frames.shape[1:3]
    for frame, box, face in zip(out, boxes, faces):
        x1, y1, x2, y2 = (int(v) for v in box)
        bx1, by1, box_w, box_h = x1, y1, x2 - x1, y2 - y1
        x1, x2 = max(0, x1), min(width, x2)
        y1, y2 = max(0, y1), min(height, y2)
        if x2 <= x1 or y2 <= y1:
            continue
        if region is not None:
            weight = mouth_mask(box_h, box_w, region)[y1 - by1:y2 - by1, x1 - bx1:x2 - bx1]
            rows = np.flatnonzero(weight[:, :, 0].max(axis=1) > 0)
            if len(rows) == 0:
                continue
            # bicubic: the 96-px face upscaled ~4x keeps more of its edges than bilinearly (box sharpness
            # 0.880 -> 0.896 of the source's on bench.paste); --paste face keeps the original's bilinear
            resized = cv2.resize(face, (box_w, box_h), interpolation=cv2.INTER_CUBIC)[y1 - by1:y2 - by1,
                                                                                       x1 - bx1:x2 - bx1]
            top, bottom = y1 + rows[0], y1 + rows[-1] + 1         # only the rows the mask reaches change
            part = frame[top:bottom, x1:x2]
            weight, resized = weight[rows[0]:rows[-1] + 1], resized[rows[0]:rows[-1] + 1]
            blended = np.round(weight * resized + (1 - weight) * part.astype(np.float32))
            part[...] = np.where(weight > 0, np.clip(blended, 0, 255), part).astype(np.uint8)
            continue
        resized = cv2.resize(face, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
        if feather > 0:
            weight = blend_mask(y2 - y1, x2 - x1, feather)
            part = frame[y1:y2, x1:x2].astype(np.float32)
            resized = np.clip(np.round(weight * resized + (1 - weight) * part), 0, 255).astype(np.uint8)
        frame[y1:y2, x1:x2] = resized
    return out


@torch.inference_mode()
def render_faces(generator: TalkLip, inputs: torch.Tensor, audio_emb: torch.Tensor, device,
                 batch_size: int = 32, dtype: Optional[torch.dtype] = None) -> np.ndarray:
    """Generated faces for (N, 6, 96, 96) inputs and (N, C) audio features: (N, 96, 96, 3) uint8."""
    out = []
    dtype = dtype or (torch.bfloat16 if getattr(generator, "weights_dtype", None) is torch.bfloat16 else None)
    autocast = torch.autocast(torch.device(device).type, dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)
    for start in range(0, len(inputs), batch_size):
        faces_in = inputs[start:start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        with autocast:
            faces = generator.render(faces_in, audio_emb[start:start + batch_size].to(device))
        out.append((faces.float().clamp(0, 1) * 255.0).round().byte().permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Lists of ``size`` consecutive items (the last one shorter)."""
    iterator = iter(items)
    while True:
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield chunk


def render_chunk(generator: TalkLip, chunk: List[Tuple[np.ndarray, Optional[np.ndarray], int]],
                 embed, opts: SynthesisOptions, clock: StageClock,
                 reference: Optional[np.ndarray] = None) -> int:
    """Paste a generated face into each frame of ``chunk`` (frame, box or None, audio row) that has a
    box, in place; returns how many. ``embed``: the audio-encoder features, (T, C), or a function
    giving those of the rows asked. The reference face is the frame's own crop, or ``reference``."""
    with_face = [(frame, box, row) for frame, box, row in chunk if box is not None]
    if not with_face:
        return 0
    started = time.perf_counter()
    boxes = np.stack([box for _, box, _ in with_face])
    crops = np.stack([crop_face(frame, box, FACE_SIZE) for frame, box, _ in with_face])
    refs = crops if reference is None else np.repeat(reference[None], len(crops), axis=0)
    inputs = face_inputs(crops, refs)
    clock.add("crop", time.perf_counter() - started)
    rows = np.array([row for _, _, row in with_face], np.int64)
    emb = embed(rows) if callable(embed) else embed[torch.from_numpy(rows)]
    started = time.perf_counter()
    faces = render_faces(generator, inputs, emb, opts.device, opts.batch_size, opts.dtype)
    clock.add("generate", time.perf_counter() - started)
    started = time.perf_counter()
    for (frame, _, _), box, face in zip(with_face, boxes, faces):
        paste_faces(frame[None], box[None], face[None], opts.feather, in_place=True,
                    region=opts.region if opts.paste == "mouth" else None)
    clock.add("paste", time.perf_counter() - started)
    return len(with_face)


def render_into(out, generator: TalkLip, items: Iterable[Tuple[np.ndarray, Optional[np.ndarray], int]],
                embed, opts: SynthesisOptions, clock: StageClock,
                reference: Optional[np.ndarray] = None, bar: Optional[Callable[[int], None]] = None,
                chunk_frames: Optional[int] = None) -> int:
    """Write ``items`` (frame, face box or None, audio-encoder row), in output order, to ``out``
    (``write_batch``), ``chunk_frames`` (default ``opts.chunk_frames``) at a time: a frame with a box
    gets the generated face pasted in (``render_chunk``); a frame without one passes through untouched.
    ``bar(frames)`` hears each chunk written. Returns the number of frames that got a face."""
    faced, untrimmed = 0, 0
    for chunk in chunked(items, chunk_frames or opts.chunk_frames):
        faced += render_chunk(generator, chunk, embed, opts, clock, reference)
        out.write_batch([frame for frame, _, _ in chunk])
        if bar is not None:
            bar(len(chunk))
        untrimmed += len(chunk)
        del chunk
        if opts.release_memory and untrimmed >= TRIM_EVERY_FRAMES:
            release_free_memory()
            untrimmed = 0
    return faced
