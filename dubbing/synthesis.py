"""The paper's test protocol: every frame of a test clip regenerated from its own upper half (``inf_test.py``)."""
import dataclasses
import itertools
import os

import numpy as np
from tqdm import tqdm

from dubbing.options import SynthesisOptions
from dubbing.render import render_into
from dubbing.speech import encode_audio
from face_detection.boxes import crop_face
from models.talklip import FACE_SIZE, TalkLip
from utils.audio import AUDIO_RATE_HZ, FEATURE_RATE_HZ, audio_visual_align, load_audio, talklip_features
from utils.errors import MediaError
from utils.pipeline import BackgroundWriter, StageClock, in_background
from utils.timeline import frame_feature_rows
from utils.video import VideoReader, VideoWriter


def synthesize_test_clip(generator: TalkLip, video_path: str, wav_path: str, boxes: np.ndarray,
                         out_path: str, opts: SynthesisOptions) -> dict:
    """The paper's test protocol for one clip: every frame regenerated from its own upper half and
    the first frame as reference, audio aligned to the video by cutting the excess evenly from
    both ends (or padding silence), output at the input frame rate with the clip's audio.
    The frames are those that decode (one per face box); a video whose frames stop before its video
    stream's declared end is reported as damaged (``VideoReader``), and nothing is written. The whole
    generated face is pasted back (``paste="face"``), as the original's protocol does."""
    opts = dataclasses.replace(opts, paste="face")
    clock = StageClock()
    reader = VideoReader(video_path)
    fps, height, width = reader.fps, reader.height, reader.width
    count = len(boxes)                 # the frames bbx_extract decoded
    wav = load_audio(wav_path)
    feats = talklip_features(wav, AUDIO_RATE_HZ)
    feats = audio_visual_align(feats, max(1, int(round(count * FEATURE_RATE_HZ / fps))), mode="center")
    audio_emb = encode_audio(generator, feats, opts.device, max_frames=opts.audio_window)
    rows = frame_feature_rows(count, fps, len(audio_emb))
    bar = tqdm(total=count, desc=os.path.basename(out_path), unit="frame", disable=not opts.progress)
    decoded = [0]

    def counted(frames):
        for frame in frames:
            decoded[0] += 1
            if decoded[0] <= count:
                yield frame

    with VideoWriter(out_path, fps, width, height, audio_path=wav_path) as writer, \
            BackgroundWriter(writer, maxsize=1, clock=clock) as out:
        frames = counted(in_background(clock.timed("decode", reader), opts.read_ahead, name="decoder"))
        first = next(frames)
        reference = crop_face(first, boxes[0], FACE_SIZE)
        items = zip(itertools.chain([first], frames), boxes, rows)
        render_into(out, generator, items, audio_emb, opts, clock, reference=reference, bar=bar.update)
        for _ in frames:               # count the rest (a damaged file raises at its end)
            pass
        if decoded[0] != count:
            raise MediaError(f"{video_path} decodes to {decoded[0]} frames but its boxes file has {count}: "
                             f"rerun preprocessing (bbx_extract) for this clip")
    bar.close()
    return {"frames": count, "fps": fps, "seconds": clock.report()}
