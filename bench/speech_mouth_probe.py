"""How much of a real mouth's motion the speech predicts: the ceiling a generator driven by speech can reach on the
mouth-sync measure.

    python -m bench.speech_mouth_probe --data_root data/grid [--train_clips 120 700] [--test_clips 50] [--context 4]

On a prepared corpus (``preparation.grid``): the signal the mouth-sync measure reads from each real clip (the
darkness at its mouth, high-passed: ``evaluation.mouth_sync``) is predicted frame by frame from the generator's own
audio input (``utils.audio.talklip_features``: 104 log filterbanks a frame, 25 a second) with ``--context`` frames
either side, by ridge regression and by a small MLP (two hidden layers of 256, dropout 0.3, AdamW), fitted on the
first N train clips for each N of ``--train_clips`` and scored as the measure scores a generated clip: the mean
per-clip Pearson r on the test clips (and, the control, against the prediction from the next test clip's speech).
A generator that reads the speech as well as these learns about this much of the mouth's motion from it; what no
reading of the speech predicts (the speaker's own timing and articulation) no model of the speech alone can.
Prints one JSON line; deterministic for a ``--seed``.
"""
import argparse
import json
import os
from typing import Dict, List, Tuple

import numpy as np
import soundfile as sf
import torch

from evaluation.mouth_sync import darkness_series, high_pass, load_ground_truth, pearson
from utils.audio import talklip_features
from utils.cli import any_int, non_negative_int, positive_int
from utils.errors import TalkLipError, run_cli
from utils.fileio import read_filelist


def clip_pairs(data_root: str, audio_root: str, name: str, context: int) -> Tuple[np.ndarray, np.ndarray]:
    """(features with ``context`` frames either side (T, 104 * (2 * context + 1)), the measure's signal (T,))."""
    gt = load_ground_truth(os.path.join(data_root, "gt", f"{name}.npz"), real=True)
    frames = len(gt["face_box"])
    signal = high_pass(darkness_series(os.path.join(data_root, "main", f"{name}.mp4"), gt, np.arange(frames),
                                       exact=True))
    wav, rate = sf.read(os.path.join(audio_root, f"{name}.wav"), dtype="int16")
    feats = talklip_features(wav, rate)
    padded = np.pad(feats, ((context, context), (0, 0)), mode="edge")
    stacked = np.concatenate([padded[i:i + len(feats)] for i in range(2 * context + 1)], 1)
    n = min(len(stacked), frames)
    return stacked[:n], signal[:n]


def ridge(x: np.ndarray, y: np.ndarray, strength: float = 0.1):
    """A ridge regression (penalty ``strength`` x the frame count, on standardised features) -> predict(x)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    xs = (x - mean) / std
    w = np.linalg.solve(xs.T @ xs + strength * len(xs) * np.eye(xs.shape[1]), xs.T @ (y - y.mean()))
    return lambda z: ((z - mean) / std) @ w


def mlp(x: np.ndarray, y: np.ndarray, seed: int, epochs: int = 60):
    """A two-layer MLP fitted by AdamW on standardised features and target -> predict(x)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    xs = torch.tensor((x - mean) / std, dtype=torch.float32)
    ys = torch.tensor(y / (y.std() + 1e-9), dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.GELU(), torch.nn.Dropout(0.3),
                              torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Dropout(0.3),
                              torch.nn.Linear(256, 1))
    optim = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(epochs):
        order = torch.randperm(len(xs), generator=generator)
        for start in range(0, len(xs), 256):
            batch = order[start:start + 256]
            loss = ((net(xs[batch])[:, 0] - ys[batch]) ** 2).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
    net.eval()

    def predict(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.tensor((z - mean) / std, dtype=torch.float32))[:, 0].numpy()
    return predict


def probe(pairs: Dict[str, Tuple[np.ndarray, np.ndarray]], train: List[str], test: List[str], seed: int) -> Dict:
    x = np.concatenate([pairs[n][0] for n in train])
    y = np.concatenate([pairs[n][1] for n in train])
    out = {"train_clips": len(train)}
    for kind, predict in (("linear", ridge(x, y)), ("mlp", mlp(x, y, seed))):
        out[f"{kind}_r"] = float(np.mean([pearson(predict(pairs[n][0]), pairs[n][1]) for n in test]))
        # the control: each test clip's mouth against the prediction from the next clip's speech (cut to the shorter)
        other = []
        for a, b in zip(test, test[1:] + test[:1]):
            n = min(len(pairs[a][1]), len(pairs[b][0]))
            other.append(pearson(predict(pairs[b][0][:n]), pairs[a][1][:n]))
        out[f"{kind}_r_other_speech"] = float(np.mean(other))
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_root", required=True,
                        help="a prepared corpus (main/, gt/, audio/, train.txt, test.txt)")
    parser.add_argument("--audio_root", default=None, help="its 16 kHz audio (default: <data_root>/audio)")
    parser.add_argument("--train_clips", type=positive_int, nargs="+", default=[120, 700],
                        help="fit on the first N train clips, for each N")
    parser.add_argument("--test_clips", type=positive_int, default=50, help="score on the first N test clips")
    parser.add_argument("--context", type=non_negative_int, default=4, help="frames of speech either side of the frame")
    parser.add_argument("--seed", type=any_int, default=0, help="the MLP's initial weights and batch order")
    return parser.parse_args(argv)


def main(args) -> int:
    for split in ("train", "test"):
        if not os.path.isfile(os.path.join(args.data_root, f"{split}.txt")):
            raise TalkLipError(f"--data_root {args.data_root} has no {split}.txt: give a prepared GRID folder "
                               f"(python -m preparation.grid writes train.txt and test.txt there)")
    train = read_filelist(os.path.join(args.data_root, "train.txt"))[:max(args.train_clips)]
    test = read_filelist(os.path.join(args.data_root, "test.txt"))[:args.test_clips]
    audio_root = args.audio_root or os.path.join(args.data_root, "audio")
    pairs = {n: clip_pairs(args.data_root, audio_root, n, args.context) for n in train + test}
    fits = [probe(pairs, train[:n], test, args.seed) for n in sorted(set(min(n, len(train)) for n in args.train_clips))]
    print(json.dumps({"data_root": args.data_root, "test_clips": len(test), "context": args.context,
                      "features": "talklip_features (104 log filterbanks a frame)", "fits": fits}))
    return 0


if __name__ == "__main__":
    run_cli(main, parse_args())
