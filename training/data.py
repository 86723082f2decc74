"""TalkLip training data: the original ``Talklipdata`` and ``collate_fn``, made deterministic.

Every random choice of a sample (which 5-frame windows, which reference windows) comes from a
generator seeded by (seed, epoch, index, rollbacks), and the order of samples from
``ResumableBatchSampler``; so a resumed run and a run on more processes see exactly the same data.
"""
import itertools
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from face_detection.boxes import crop_face
from models.avhubert.expert_input import collate_targets
from utils.audio import AUDIO_RATE_HZ, audio_visual_align, load_audio, talklip_features
from utils.corpus import load_boxes
from utils.errors import MediaError
from utils.fileio import read_filelist
from utils.video import VideoReader

WINDOW = 5                 # frames per training window
TRAIN_WINDOW_RATE = 0.08   # windows drawn per frame of a training clip
VALID_WINDOW_STEP = 0.12   # validation windows start every 12% of a clip


def spread_starts(starts: Sequence[int]) -> List[int]:
    """Sorted starts, dropping any within 4 frames of the last kept (non-overlapping windows)."""
    kept = []
    for s in sorted(starts):
        if not kept or s - kept[-1] > WINDOW - 1:
            kept.append(int(s))
    return kept


# A clip longer than this trains on one random segment of this many frames per draw (validation: its
# first): every frame of a training clip is held, pasted and read by the expert, so a 61 s clip among
# short ones took a step from 0.8 to 7.1 GB. The lip loss is left out for such a segment (its transcript
# covers the whole clip). LRS2's main clips are all shorter.
MAX_CLIP_FRAMES = 250


def window_starts(num_frames: int, train: bool, rng: np.random.Generator, per_clip: Optional[int] = None):
    """(starts, reference starts or None). Train: ~8% of the frames drawn from 1..T-5, references
    from another window of the clip; validation: every 12% of the clip, reference frame 0."""
    last = num_frames - WINDOW            # the largest valid start
    if last < 1:
        raise MediaError(f"clip of {num_frames} frames is shorter than the {WINDOW + 1} frames training needs")
    if train:
        count = per_clip or max(1, int(num_frames * TRAIN_WINDOW_RATE))
        starts = spread_starts(rng.choice(np.arange(1, last + 1), size=min(count, last), replace=False))
        refs = []
        for s in starts:
            ref = s
            while ref == s:
                ref = int(rng.integers(0, last + 1))
            refs.append(ref)
        return starts, refs
    step = max(1, int(num_frames * VALID_WINDOW_STEP))
    return spread_starts(range(0, last + 1, step)), None


def check_inputs(names: List[str], video_root: str, audio_root: str, bbx_root: str,
                 word_root: Optional[str] = None, shown: int = 3) -> None:
    """Refuse, before training starts, listed clips whose video, audio (preprocess.sh's .wav) or face boxes
    (.npy) are missing, and a --word_root that is no folder: one line naming the first few and how many."""
    if word_root is not None and not os.path.isdir(word_root):
        raise MediaError(f"--word_root {word_root} is not a folder: give the folder of <spk>/<clip>.txt transcripts, "
                         f"or leave it out to use the expert's pseudo-labels")
    missing = []
    for name in names:
        for path, what in ((f"{video_root}/{name}.mp4", "video"), (f"{audio_root}/{name}.wav", "audio"),
                           (f"{bbx_root}/{name}.npy", "face boxes")):
            if not os.path.isfile(path):
                missing.append(f"{name} ({what}: {path})")
                break
    if missing:
        raise MediaError(f"{len(missing)} of {len(names)} listed clips lack their inputs, e.g. "
                         + "; ".join(missing[:shown]) + ": run preprocess.sh for them, or remove them from the lists")


def check_lengths(names: List[str], audio_root: str, bbx_root: str, tolerance_s: float, fps: float = 25.0,
                  log=None) -> List[str]:
    """The clips whose speech covers their video: a clip whose audio (preprocess.sh's .wav) ends more than two
    frames before its video (one face box per frame) is named in a warning with both lengths, and left out when
    the gap exceeds ``tolerance_s``: its last windows would train the mouth against zero-padded silence."""
    import soundfile
    log = log or (lambda text: print(text, file=sys.stderr))
    short, kept = [], []
    for name in names:
        frames = len(np.load(f"{bbx_root}/{name}.npy", mmap_mode="r"))
        try:
            audio_s = soundfile.info(f"{audio_root}/{name}.wav").duration
        except RuntimeError:
            raise MediaError(f"{audio_root}/{name}.wav is not a readable WAV: delete it and rerun preprocess.sh "
                             f"(audio_extract) for this clip") from None
        video_s = frames / fps
        gap = video_s - audio_s
        if gap > 2.0 / fps:
            short.append((name, audio_s, video_s, gap > tolerance_s))
        if gap <= tolerance_s:
            kept.append(name)
    for name, audio_s, video_s, left_out in short[:5]:
        log(f"warning: {name}: its audio lasts {audio_s:.2f} s, its video {video_s:.2f} s: "
            + (f"left out (more than --max_audio_gap {tolerance_s:g} s short)" if left_out else
               f"the last {video_s - audio_s:.2f} s train against silence (within --max_audio_gap {tolerance_s:g} s)"))
    if len(short) > 5:
        log(f"warning: {len(short) - 5} more clips' audio is shorter than their video "
            f"({sum(s[3] for s in short)} of all {len(short)} left out)")
    return kept


def shift_frames(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Per-frame features moved k frames against the video (row t gets row t + k), the ends repeated:
    --av_shift draws k anew each time a training clip is read, so the speech cannot tell the mouth's exact
    timing and L1 alone learns the average over the offsets."""
    index = torch.arange(len(feats)) + k
    return feats[index.clamp_(0, len(feats) - 1)]


class TalkLipDataset(torch.utils.data.Dataset):
    """Samples of ``<file_dir>/<split>.txt``; item -> dict (see ``__getitem__``)."""

    def __init__(self, split: str, file_dir: str, video_root: str, audio_root: str, bbx_root: str,
                 labels: Dict[str, Tuple[str, str]], codec, train: Optional[bool] = None, seed: int = 0,
                 windows_per_clip: Optional[int] = None, names: Optional[List[str]] = None, av_shift: int = 0):
        self.names = names if names is not None else read_filelist(os.path.join(file_dir, f"{split}.txt"))
        self.video_root, self.audio_root, self.bbx_root = video_root, audio_root, bbx_root
        self.labels = labels          # name -> (kind, text): see training.labels; empty text: no lip loss
        self.codec, self.seed, self.windows_per_clip = codec, seed, windows_per_clip
        self.train = split == "train" if train is None else train
        self.av_shift = av_shift if self.train else 0   # training only: see shift_frames
        self.epoch, self.rollbacks = 0, 0
        self.segmented = set()        # long clips already said to train on segments

    def __len__(self):
        return len(self.names)

    def set_epoch(self, epoch: int, rollbacks: int = 0):
        self.epoch, self.rollbacks = epoch, rollbacks

    def __getitem__(self, idx: int) -> Dict:
        """faces_in (N, 6, 96, 96) masked target + reference in [0, 1] BGR; faces_gt (N, 3, 96, 96);
        audio (T, 104); target ids; frames (T, H, W, 3) uint8; boxes (T, 4); picked (N,) frame indices."""
        name = self.names[idx]
        rng = np.random.default_rng([self.seed, self.epoch, idx, self.rollbacks])
        video = f"{self.video_root}/{name}.mp4"
        boxes = load_boxes(self.bbx_root, name)
        first, stop = 0, None                # a long clip: one segment of it (see MAX_CLIP_FRAMES)
        if len(boxes) > MAX_CLIP_FRAMES:
            first = int(rng.integers(0, len(boxes) - MAX_CLIP_FRAMES + 1)) if self.train else 0
            stop = first + MAX_CLIP_FRAMES
            if name not in self.segmented:
                self.segmented.add(name)
                print(f"note: {name} has {len(boxes)} frames; it trains on {MAX_CLIP_FRAMES}-frame segments "
                      f"({MAX_CLIP_FRAMES / 25:g} s at 25 fps) without the lip loss, whose transcript covers the "
                      f"whole clip: memory stays that of a short clip", file=sys.stderr)
        with VideoReader(video) as reader:
            frames = np.stack(list(reader) if stop is None else list(itertools.islice(reader, first, stop)))
        if len(boxes) < first + len(frames):
            raise MediaError(f"{self.bbx_root}/{name}.npy has {len(boxes)} boxes for {len(frames)} frames: "
                             f"rerun bbx_extract")
        wav = load_audio(f"{self.audio_root}/{name}.wav")
        feats = audio_visual_align(talklip_features(wav, AUDIO_RATE_HZ), first + len(frames) if stop else len(frames),
                                   mode="end")
        audio = torch.from_numpy(np.ascontiguousarray(feats[first:]))
        boxes = boxes[first:]
        starts, refs = window_starts(len(frames), self.train, rng, self.windows_per_clip)
        if self.av_shift:             # drawn after the windows, so they are the same with and without it
            audio = shift_frames(audio, int(rng.integers(-self.av_shift, self.av_shift + 1)))
        picked = np.concatenate([np.arange(s, s + WINDOW) for s in starts])
        ref_idx = (np.concatenate([np.arange(r, r + WINDOW) for r in refs]) if refs is not None
                   else np.zeros(len(picked), np.int64))
        crop = lambda idx: torch.from_numpy(np.stack([crop_face(frames[i], boxes[i]) for i in idx])
                                            ).permute(0, 3, 1, 2).float() / 255.0
        gt = crop(picked)
        masked = gt.clone()
        masked[:, :, gt.shape[2] // 2:] = 0.0
        text = self.labels[name][1] if stop is None else ""
        target = self.codec.encode(text) if text else []
        return {"faces_in": torch.cat([masked, crop(ref_idx)], dim=1), "faces_gt": gt, "audio": audio,
                "target": target, "frames": torch.from_numpy(frames), "boxes": torch.from_numpy(boxes[:len(frames)]),
                "picked": torch.from_numpy(picked), "name": name}


def collate(samples: List[Dict]) -> Dict:
    """Batch: faces concatenated over clips; audio (B, 104, T) zero-padded to the longest clip with
    padding_mask (B, T) True on padding; audio_index picks each face's row of the flattened
    (B*T) audio features; targets as fairseq collates them."""
    steps = max(len(s["frames"]) for s in samples)
    dim = samples[0]["audio"].shape[1]
    audio = torch.zeros(len(samples), dim, steps)
    mask = torch.ones(len(samples), steps, dtype=torch.bool)
    for i, s in enumerate(samples):
        audio[i, :, :len(s["audio"])] = s["audio"].T
        mask[i, :len(s["audio"])] = False
    target, prev, lengths, ntokens = collate_targets([s["target"] for s in samples])
    return {"faces_in": torch.cat([s["faces_in"] for s in samples]),
            "faces_gt": torch.cat([s["faces_gt"] for s in samples]),
            "audio": audio, "padding_mask": mask,
            "audio_index": torch.cat([s["picked"] + steps * i for i, s in enumerate(samples)]),
            "target": target, "prev_output_tokens": prev, "ntokens": ntokens,
            "frames": [s["frames"] for s in samples], "boxes": [s["boxes"] for s in samples],
            "picked": [s["picked"] for s in samples], "names": [s["name"] for s in samples]}


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Micro-batches for one process of a (possibly distributed, accumulating) run.

    Each epoch's order is a permutation seeded by (seed, epoch, rollbacks); a global step takes
    ``batch_size * world * accum`` samples, of which micro-batch ``a * world + rank`` (a < accum)
    is this process's a-th. ``start_step`` skips global steps already done (resume)."""

    def __init__(self, num_samples: int, batch_size: int, world: int = 1, rank: int = 0, accum: int = 1,
                 seed: int = 0, shuffle: bool = True, drop_last: bool = True):
        self.n, self.b, self.world, self.rank, self.accum = num_samples, batch_size, world, rank, accum
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch, self.rollbacks, self.start_step = 0, 0, 0
        if self.global_batch > num_samples and drop_last:
            raise MediaError(f"{num_samples} training clips are fewer than one step's "
                             f"{self.global_batch} (batch_size x processes x accum_steps): lower them")

    @property
    def global_batch(self) -> int:
        return self.b * self.world * self.accum

    def set_epoch(self, epoch: int, rollbacks: int = 0, start_step: int = 0):
        self.epoch, self.rollbacks, self.start_step = epoch, rollbacks, start_step

    def steps_per_epoch(self) -> int:
        full = self.n // self.global_batch
        return full if self.drop_last or self.n % self.global_batch == 0 else full + 1

    def __len__(self):
        return (self.steps_per_epoch() - self.start_step) * self.accum

    def __iter__(self):
        order = (np.random.default_rng([self.seed, self.epoch, self.rollbacks]).permutation(self.n)
                 if self.shuffle else np.arange(self.n))
        for step in range(self.start_step, self.steps_per_epoch()):
            chunk = order[step * self.global_batch:(step + 1) * self.global_batch]
            for a in range(self.accum):
                j = a * self.world + self.rank
                part = chunk[j * self.b:(j + 1) * self.b]
                if len(part):
                    yield part.tolist()
