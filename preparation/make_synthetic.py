"""Make a small, deterministic LRS2-layout corpus of a talking face for tests and the quickstart.

    python -m preparation.make_synthetic --out_dir DIR --num_clips 10 --seed 0

Writes DIR/main/<speaker>/<clip>.mp4 (25 fps, H.264 + AAC) and .txt (LRS2 'Text:  ...'
transcript), DIR/{train,valid,test}.txt and DIR/filelist.txt (all clips) with one
<speaker>/<clip> per line, and DIR/gt/<speaker>/<clip>.npz with the per-frame ground truth:
``mouth_opening`` (N,) in [0, 1], ``face_box`` (N, 4) and ``mouth_center`` (N, 2) in pixels.
The face is scikit-image's astronaut photo; its mouth opens with the speech loudness and the
head moves slightly. Speech comes from espeak-ng when installed, else a built-in synthesiser.

``--grammar grid`` makes the readable corpus instead (preparation/visemes.py): sentences of a GRID-like
grammar, speech rendered phoneme by phoneme by the built-in synthesiser (the same with or without
espeak-ng, whose phoneme timing is not exposed), and a mouth drawn per viseme with coarticulation.
Its gt/*.npz adds ``viseme`` (N,) class ids, ``mouth_shape`` (N, 6) (opening, width, roundness, teeth,
tongue, tucked lower lip), ``mouth_roundness``, and ``phonemes`` / ``phoneme_times`` (the segments, in
seconds); its ``mouth_opening`` is how open the drawn mouth looks (preparation/mouth_pixels.py), what
the mouth-sync measure reads, since teeth and tongue make a viseme's darkness differ from its geometry.
"""
import argparse
import os
import sys
import tempfile
import time
from typing import Optional, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from preparation.mouth_pixels import OPEN_DARKNESS, mouth_darkness
from preparation.speech import espeak_available, mouth_opening, mouth_width, speak
from preparation.visemes import EASE_S, SLOTS, Segment, mouth_track, speak_phonemes
from preparation.visemes import sentence as grid_sentence
from utils.cli import int_at_least, non_negative_int, number_in_range, positive_int
from utils.audio import AUDIO_RATE_HZ, save_wav
from utils.errors import TalkLipError, run_cli
from utils.fileio import atomic_output
from utils.video import VideoWriter

FPS = 25
FRAME_SIZE = 160                      # LRS2 frames are 160 x 160
SOURCE_CROP_CENTER = (222.0, 142.0)   # in the 512 x 512 astronaut photo
SOURCE_CROP_SIDE = 224.0              # photo pixels mapped onto one output frame
MOUTH_CENTER = (222.0, 146.0)         # the astronaut's mouth, photo pixels
MOUTH_HALF_WIDTH = 21.0
VISEME_MOUTH_SCALE = 1.3              # the readable corpus' mouth, x the photo's: visemes a 96-px face shows
MOUTH_SCALES = (0.5, 2.0)             # the mouth sizes --mouth_scale takes (x the photo's)
SPEECH_SNRS_DB = (-30.0, 60.0)        # the speech-to-noise ratios --speech_snr_db takes
ARTICULATIONS = (0.0, 1.0)            # the per-speaker style spreads --articulation takes
FACE_BOX = (172.0, 62.0, 274.0, 178.0)  # forehead-to-chin box in the photo
LEAD_SILENCE_S = 0.3
WORDS = ("ABOUT AFTER AGAIN BECAUSE BEFORE BETTER CHANGE COUNTRY DIFFERENT EVERY FAMILY "
         "FOLLOWING GREAT HAPPEN IMPORTANT LITTLE MAJOR MONEY NUMBER PEOPLE PLACE POLITICAL "
         "QUESTION RIGHT SCHOOL SEVERAL SOMETHING STILL THINGS THOUGHT TODAY UNDER WATER WEATHER "
         "WORLD YEARS YOUNG").split()


def neutral_face() -> np.ndarray:
    """The astronaut photo (BGR) with her smile painted over by skin, ready for a drawn mouth."""
    import skimage.data
    photo = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
    mask = np.zeros(photo.shape[:2], np.uint8)
    cx, cy = (int(v) for v in MOUTH_CENTER)
    cv2.ellipse(mask, (cx, cy), (int(MOUTH_HALF_WIDTH) + 5, 12), 0, 0, 360, 255, -1)
    return cv2.inpaint(photo, mask, 7, cv2.INPAINT_TELEA)


def draw_mouth(image: np.ndarray, opening: float, width: float = 1.0) -> None:
    """Draw lips and, when open, the dark mouth interior, in place (photo coordinates); ``width``
    scales the mouth's width (its shape for the current sound)."""
    cx, cy = (int(round(v)) for v in MOUTH_CENTER)
    half_w = int(round(MOUTH_HALF_WIDTH * width))
    lip_h = int(round(3 + 8 * opening))
    cv2.ellipse(image, (cx, cy), (half_w, lip_h), 0, 0, 360, (80, 80, 165), -1, cv2.LINE_AA)
    if opening > 0.05:
        inner_h = max(1, int(round(7 * opening)))
        cv2.ellipse(image, (cx, cy), (half_w - 5, inner_h), 0, 0, 360, (35, 20, 30), -1, cv2.LINE_AA)
    else:
        cv2.line(image, (cx - half_w + 3, cy), (cx + half_w - 3, cy), (50, 45, 90), 1, cv2.LINE_AA)


def draw_viseme_mouth(image: np.ndarray, shape: np.ndarray, scale: Optional[float] = None) -> None:
    """Draw a mouth pose in place (photo coordinates): ``shape`` is one row of
    ``preparation.visemes.mouth_track`` (opening, width, roundness, teeth, tongue, tuck), at ``scale``
    times the photo's mouth (``VISEME_MOUTH_SCALE``). Rounded lips are narrower and thicker with a rounder
    opening; teeth show as a light band under the upper lip, the tongue as a pink blob, a tucked lower
    lip as teeth resting on it."""
    k = VISEME_MOUTH_SCALE if scale is None else scale
    opening, width, roundness, teeth, tongue, tuck = (float(v) for v in shape)
    cx, cy = (int(round(v)) for v in MOUTH_CENTER)
    half_w = int(round(MOUTH_HALF_WIDTH * width * k))
    lip_h = int(round(k * (3 + 8 * opening + 3 * roundness)))
    cv2.ellipse(image, (cx, cy), (half_w, lip_h), 0, 0, 360, (80, 80, 165), -1, cv2.LINE_AA)
    if opening > 0.05:
        inner_w = max(3, int(round((half_w - 5 * k) * (1 - 0.35 * roundness))))
        inner_h = max(1, int(round(k * (7 * opening + 2 * roundness))))
        cv2.ellipse(image, (cx, cy), (inner_w, inner_h), 0, 0, 360, (35, 20, 30), -1, cv2.LINE_AA)
        if teeth > 0.2:
            band = max(1, int(round(1.5 * k * teeth)))
            cv2.ellipse(image, (cx, cy - inner_h + band), (max(2, inner_w - 2), band), 0, 0, 360,
                        (215, 220, 225), -1, cv2.LINE_AA)
        if tongue > 0.2:
            cv2.ellipse(image, (cx, cy + inner_h // 2), (max(2, inner_w // 2), max(1, inner_h // 2)), 0, 0, 360,
                        (110, 100, 200), -1, cv2.LINE_AA)
    else:
        cv2.line(image, (cx - half_w + 3, cy), (cx + half_w - 3, cy), (50, 45, 90), max(1, int(round(k))), cv2.LINE_AA)
    if tuck > 0.2:                      # the lower lip drawn in under the upper teeth
        cv2.ellipse(image, (cx, cy + int(round(2 * k))), (max(3, half_w - int(round(7 * k))), int(round(2 * k))),
                    0, 0, 360, (215, 220, 225), -1, cv2.LINE_AA)


def frame_transform(frame_index: int, motion: np.ndarray) -> np.ndarray:
    """2 x 3 affine map from photo to output pixels, with a slow head drift and sway."""
    amp_x, amp_y, freq, phase, zoom = motion
    t = frame_index / FPS
    scale = FRAME_SIZE / (SOURCE_CROP_SIDE * zoom)
    cx = SOURCE_CROP_CENTER[0] + amp_x * np.sin(2 * np.pi * freq * t + phase)
    cy = SOURCE_CROP_CENTER[1] + amp_y * np.sin(2 * np.pi * freq * 0.7 * t + 2 * phase)
    return np.array([[scale, 0, FRAME_SIZE / 2 - scale * cx],
                     [0, scale, FRAME_SIZE / 2 - scale * cy]])


def apply(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ affine[:, :2].T + affine[:, 2]


def render_clip(face: np.ndarray, opening: np.ndarray, motion: np.ndarray, width: Optional[np.ndarray] = None,
                shapes: Optional[np.ndarray] = None, mouth_scale: Optional[float] = None):
    """Yield (frame BGR uint8, face_box (4,), mouth_center (2,)) for each frame. The mouth opens by
    ``opening`` (and ``width``), or takes the poses ``shapes`` (N, 6) when given (the readable corpus),
    drawn at ``mouth_scale`` times the photo's mouth (None: ``VISEME_MOUTH_SCALE``)."""
    corners = np.array([FACE_BOX[:2], FACE_BOX[2:]])
    width = np.ones(len(opening)) if width is None else width
    for i, value in enumerate(opening):
        image = face.copy()
        if shapes is not None:
            draw_viseme_mouth(image, shapes[i], mouth_scale)
        else:
            draw_mouth(image, float(value), float(width[i]))
        affine = frame_transform(i, motion)
        frame = cv2.warpAffine(image, affine, (FRAME_SIZE, FRAME_SIZE), flags=cv2.INTER_AREA,
                               borderMode=cv2.BORDER_REFLECT)
        yield frame, apply(affine, corners).reshape(4), apply(affine, np.array([MOUTH_CENTER]))[0]


def add_noise(wav: np.ndarray, spoken: Tuple[int, int], snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``wav`` under white Gaussian noise (the whole clip) ``snr_db`` below the speech's mean power over
    ``spoken`` (samples from the first word's start to the last word's end), clipped to [-1, 1]."""
    power = float(np.mean(np.square(wav[spoken[0]:spoken[1]], dtype=np.float64)))
    noise = rng.standard_normal(len(wav)) * np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return np.clip(wav + noise, -1.0, 1.0).astype(np.float32)


def speaker_style(seed: int, speaker: int, spread: float) -> np.ndarray:
    """One speaker's way of articulating (``--articulation``), the same in all their clips: gains
    (opening, width, roundness, teeth and tongue, coarticulation time), each exp(spread * u) with u
    uniform in [-1, 1] (width's a quarter of that), drawn from the corpus seed and the speaker's index
    alone, so a speaker keeps their style whatever else the corpus holds. spread 0: all ones."""
    u = np.random.default_rng([seed, speaker, 1]).uniform(-1.0, 1.0, 5)
    return np.exp(spread * u * np.array([1.0, 0.25, 1.0, 1.0, 1.0]))


def articulate(shapes: np.ndarray, style: np.ndarray) -> np.ndarray:
    """``shapes`` (N, 6: opening, width, roundness, teeth, tongue, tuck) as a speaker of ``style``
    (``speaker_style``) makes them: a wider or narrower opening, lips more or less rounded, teeth and tongue
    more or less shown. Closures stay closed (the gain scales an opening of 0 to 0)."""
    out = shapes.copy()
    out[:, 0] = np.clip(shapes[:, 0] * style[0], 0.0, 1.0)
    out[:, 1] = shapes[:, 1] * style[1]
    out[:, 2] = np.clip(shapes[:, 2] * style[2], 0.0, 1.0)
    out[:, 3:5] = np.clip(shapes[:, 3:5] * style[3], 0.0, 1.0)
    return out


def make_clip(out_dir: str, name: str, sentence: str, rng: np.random.Generator, face: np.ndarray,
              use_espeak: bool, grammar: str = "words", av_jitter_frames: int = 0,
              mouth_scale: Optional[float] = None, speech_snr_db: Optional[float] = None,
              style: Optional[np.ndarray] = None) -> None:
    samples_per_frame = AUDIO_RATE_HZ // FPS
    offset_frames = 0
    if grammar == "grid":             # phonemes rendered one by one: the mouth shows each one's viseme
        wav, segments = speak_phonemes(sentence.split(), rng, LEAD_SILENCE_S)
        words = [seg for seg in segments if seg.phone != "SIL"]
        spoken = (int(words[0].start * AUDIO_RATE_HZ), int(np.ceil(words[-1].end * AUDIO_RATE_HZ)))
        if av_jitter_frames:          # the mouth moves this many frames after (or, < 0, before) the sound
            offset_frames = int(rng.integers(-av_jitter_frames, av_jitter_frames + 1))
            segments = [Segment(seg.phone, seg.start + offset_frames / FPS, seg.end + offset_frames / FPS)
                        for seg in segments]
    else:
        lead = np.zeros(int(LEAD_SILENCE_S * AUDIO_RATE_HZ), np.float32)
        wav = np.concatenate([lead, speak(sentence, rng, use_espeak), lead])
    num_frames = int(np.ceil(len(wav) / samples_per_frame))
    wav = np.pad(wav, (0, num_frames * samples_per_frame - len(wav)))
    truth, shapes = {}, None
    if grammar == "grid":
        ease = EASE_S if style is None else EASE_S * float(style[4])     # a speaker's own coarticulation time
        shapes, visemes = mouth_track(segments, num_frames, FPS, ease_s=ease)
        if style is not None:         # and their own gains on the shapes
            shapes = articulate(shapes, style)
        opening, width = shapes[:, 0], shapes[:, 1]
        truth = {"mouth_roundness": shapes[:, 2], "mouth_shape": shapes, "viseme": visemes,
                 "phonemes": np.array([seg.phone for seg in segments]),
                 "phoneme_times": np.array([(seg.start, seg.end) for seg in segments], np.float32),
                 "av_offset_frames": np.int64(offset_frames)}
        if style is not None:
            truth["articulation"] = style.astype(np.float32)
    else:
        opening = mouth_opening(wav, num_frames, FPS)
        width = mouth_width(wav, opening, FPS)
    motion = np.array([rng.uniform(2, 5), rng.uniform(1, 3), rng.uniform(0.2, 0.5),
                       rng.uniform(0, 2 * np.pi), rng.uniform(0.95, 1.05)])
    if speech_snr_db is not None:     # drawn last: the clip's picture is the noiseless corpus' own
        wav = add_noise(wav, spoken, speech_snr_db, rng)

    video_path = os.path.join(out_dir, "main", f"{name}.mp4")
    os.makedirs(os.path.dirname(video_path), exist_ok=True)
    boxes, centers, darkness = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        wav_path = os.path.join(scratch, "speech.wav")
        save_wav(wav_path, wav)
        with VideoWriter(video_path, FPS, FRAME_SIZE, FRAME_SIZE, audio_path=wav_path) as writer:
            for frame, box, center in render_clip(face, opening, motion, width, shapes, mouth_scale):
                writer.write(frame)
                boxes.append(box)
                centers.append(center)
                if shapes is not None:
                    darkness.append(mouth_darkness(frame, center, box))
    if grammar == "grid":             # the opening as the pixels show it (teeth, tongue, lip roundness)
        opening = np.clip(np.array(darkness) / OPEN_DARKNESS, 0, 1).astype(np.float32)
    with atomic_output(os.path.join(out_dir, "main", f"{name}.txt")) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(f"Text:  {sentence}\nConf:  4\n")
    with atomic_output(os.path.join(out_dir, "gt", f"{name}.npz")) as tmp:
        np.savez(tmp, mouth_opening=opening, mouth_width=width, face_box=np.array(boxes, np.float32),
                 mouth_center=np.array(centers, np.float32), **truth)


def split_names(names, rng):
    """Shuffle into train/valid/test, at least one clip each; about 60/20/20."""
    order = [names[i] for i in rng.permutation(len(names))]
    n_eval = max(1, round(0.2 * len(names)))
    return {"test": sorted(order[:n_eval]), "valid": sorted(order[n_eval:2 * n_eval]),
            "train": sorted(order[2 * n_eval:])}


def write_list(path, names):
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.writelines(f"{n}\n" for n in names)


def grid_sentences(count: int, rng: np.random.Generator, slots=SLOTS) -> list:
    """``count`` different sentences of the grammar (one word per slot), so no held-out sentence was
    seen in training: held-out clips are new combinations of seen words."""
    total = int(np.prod([len(slot) for slot in slots]))
    if count > total:
        raise TalkLipError(f"--num_clips {count} exceeds the {total} sentences of the grammar")
    seen, out = set(), []
    while len(out) < count:
        words = " ".join(grid_sentence(rng, slots))
        if words not in seen:
            seen.add(words)
            out.append(words)
    return out


SENTENCE_SPLIT_SEED = 20230618       # fixes which sentences of the grammar are held out, for every corpus seed


def grid_splits(names, sentences, rng, slots=SLOTS):
    """Train/valid/test by sentence: a fixed fifth of the grammar's sentences is only ever test, another
    only ever valid, whatever the corpus seed, so readers trained once on one corpus' train split never
    saw a test sentence of another (the quickstart's shipped readers). Falls back to ``split_names`` when
    a split would be empty (a grammar narrowed to a few sentences)."""
    total = int(np.prod([len(slot) for slot in slots]))
    bucket = np.random.default_rng(SENTENCE_SPLIT_SEED).permutation(total) % 5
    splits = {"test": [], "valid": [], "train": []}
    for name, words in zip(names, sentences):
        index = 0
        for slot, word in zip(slots, words.split()):
            index = index * len(slot) + slot.index(word)
        splits[{0: "test", 1: "valid"}.get(int(bucket[index]), "train")].append(name)
    if not all(splits.values()):
        return split_names(names, rng)
    return {k: sorted(v) for k, v in splits.items()}


def make_corpus(out_dir: str, num_clips: int = 10, seed: int = 0, num_speakers: int = 0,
                min_words: int = 3, max_words: int = 6, use_espeak: bool = True, grammar: str = "words",
                slots=SLOTS, av_jitter_frames: int = 0, mouth_scale: Optional[float] = None,
                speech_snr_db: Optional[float] = None, articulation: float = 0.0) -> dict:
    """Generate the corpus; return {split: [names]} (plus 'all'). ``grammar``: ``words`` (random words,
    a mouth that opens with the loudness) or ``grid`` (the readable corpus: preparation/visemes.py, whose
    ``slots`` a test may narrow). ``av_jitter_frames`` J (grid only): each clip's mouth runs a random whole
    number of frames in [-J, J] behind its speech, as real clips' sound and picture are off by a frame or
    two: the audio then no longer fixes the mouth frame for frame (gt/*.npz keeps what the video shows,
    and ``av_offset_frames``). ``mouth_scale`` (grid only): the mouth's size, x the photo's (None:
    ``VISEME_MOUTH_SCALE``, 1.3; 1.0 is the photo's own, whose teeth and tongue are a pixel or two on a 96-px
    face). ``speech_snr_db`` (grid only): white noise under the speech, this many dB below its power (the
    picture and the truth are the noiseless corpus'; noisy sound leaves the audio less sure of the words).
    ``articulation`` A (grid only): each speaker articulates in their own way (``speaker_style``: opening,
    width, rounding, teeth and coarticulation gains within exp(+-A)), as real speakers do, so the speech
    alone no longer fixes the mouth pixel for pixel; 0: every speaker articulates alike."""
    if av_jitter_frames and grammar != "grid":
        raise TalkLipError("--av_jitter_frames needs --grammar grid (the words corpus' mouth follows its loudness)")
    if mouth_scale is not None and grammar != "grid":
        raise TalkLipError("--mouth_scale needs --grammar grid (the words corpus' mouth is the photo's)")
    if speech_snr_db is not None and grammar != "grid":
        raise TalkLipError("--speech_snr_db needs --grammar grid (the words corpus has no word timing to measure the "
                           "speech's power over)")
    if speech_snr_db is not None and not SPEECH_SNRS_DB[0] <= speech_snr_db <= SPEECH_SNRS_DB[1]:
        raise TalkLipError(f"--speech_snr_db must be between {SPEECH_SNRS_DB[0]:g} and {SPEECH_SNRS_DB[1]:g} dB, "
                           f"got {speech_snr_db:g}")
    if articulation and grammar != "grid":
        raise TalkLipError("--articulation needs --grammar grid (the words corpus' mouth follows its loudness)")
    if not ARTICULATIONS[0] <= articulation <= ARTICULATIONS[1]:
        raise TalkLipError(f"--articulation must be between {ARTICULATIONS[0]:g} and {ARTICULATIONS[1]:g}, "
                           f"got {articulation:g}")
    if mouth_scale is not None and not MOUTH_SCALES[0] <= mouth_scale <= MOUTH_SCALES[1]:
        raise TalkLipError(f"--mouth_scale must be between {MOUTH_SCALES[0]:g} and {MOUTH_SCALES[1]:g} (x the photo's "
                           f"mouth), got {mouth_scale:g}")
    if num_clips < 3:
        raise TalkLipError(f"--num_clips {num_clips} is too small: train, valid and test each need a clip")
    rng = np.random.default_rng(seed)
    num_speakers = num_speakers or max(1, num_clips // 3)
    speakers = [str(rng.integers(10 ** 18, 10 ** 19 - 1, dtype=np.uint64)) for _ in range(num_speakers)]
    names = [f"{speakers[i % num_speakers]}/{i // num_speakers + 1:05d}" for i in range(num_clips)]
    if grammar == "grid":
        sentences = grid_sentences(len(names), rng, slots)
    else:
        sentences = [" ".join(rng.choice(WORDS, size=rng.integers(min_words, max_words + 1)))
                     for _ in names]
    face = neutral_face()
    source = ("phonemes rendered by the built-in synthesiser (grid grammar)" if grammar == "grid" else
              "espeak-ng" if use_espeak and espeak_available() else "built-in synthesiser")
    print(f"synthetic corpus: {num_clips} clips, speech from {source}", file=sys.stderr)
    for i, (name, sentence) in enumerate(tqdm(list(zip(names, sentences)), desc="clips",
                                              file=sys.stderr, disable=None)):
        style = speaker_style(seed, i % num_speakers, articulation) if articulation else None
        make_clip(out_dir, name, sentence, np.random.default_rng([seed, i]), face, use_espeak, grammar,
                  av_jitter_frames, mouth_scale, speech_snr_db, style)
    splits = grid_splits(names, sentences, rng, slots) if grammar == "grid" else split_names(names, rng)
    for split, members in splits.items():
        write_list(os.path.join(out_dir, f"{split}.txt"), members)
    write_list(os.path.join(out_dir, "filelist.txt"), sorted(names))
    splits["all"] = sorted(names)
    return splits


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", required=True, help="corpus folder to create")
    parser.add_argument("--num_clips", type=int_at_least(3), default=10, help="number of clips (at least 3)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed; same seed, same corpus")
    parser.add_argument("--num_speakers", type=non_negative_int, default=0, help="speaker folders (0: clips / 3)")
    parser.add_argument("--min_words", type=positive_int, default=3, help="fewest words per sentence")
    parser.add_argument("--max_words", type=positive_int, default=6, help="most words per sentence")
    parser.add_argument("--grammar", default="words", choices=["words", "grid"],
                        help="words: random words, the mouth opens with the loudness; grid: the readable corpus "
                             "(a GRID-like grammar, phonemes rendered one by one, a mouth drawn per viseme)")
    parser.add_argument("--av_jitter_frames", type=non_negative_int, default=0,
                        help="grid: each clip's mouth runs a random number of frames in [-J, J] behind its speech "
                             "(real clips' sound and picture are off by a frame or two); 0: in step")
    parser.add_argument("--mouth_scale", type=number_in_range(*MOUTH_SCALES), default=None,
                        help=f"grid: the mouth's size x the photo's (default {VISEME_MOUTH_SCALE}, what the shipped "
                             f"readers read; 1.0: the photo's own, smaller visemes)")
    parser.add_argument("--speech_snr_db", type=number_in_range(*SPEECH_SNRS_DB), default=None,
                        help="grid: white noise under the speech, this many dB below its power (the picture is "
                             "unchanged; default: no noise)")
    parser.add_argument("--articulation", type=number_in_range(*ARTICULATIONS), default=0.0,
                        help="grid: each speaker articulates in their own way, gains on opening, rounding, teeth "
                             "and coarticulation within exp(+-A) (default 0: every speaker alike)")
    parser.add_argument("--no_espeak", action="store_true",
                        help="use the built-in synthesiser even when espeak-ng is installed")
    return parser.parse_args(argv)


def main(args) -> int:
    started = time.time()
    make_corpus(args.out_dir, args.num_clips, args.seed, args.num_speakers, args.min_words,
                args.max_words, use_espeak=not args.no_espeak, grammar=args.grammar,
                av_jitter_frames=args.av_jitter_frames, mouth_scale=args.mouth_scale,
                speech_snr_db=args.speech_snr_db, articulation=args.articulation)
    print(f"wrote {args.num_clips} clips to {args.out_dir} in {time.time() - started:.1f}s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
