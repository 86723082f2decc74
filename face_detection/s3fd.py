"""S3FD face detector with the state-dict layout of the original ``s3fd.pth``.

The network is the VGG16-based single-shot detector used by Wav2Lip and TalkLip: six
detection heads at strides 4..128, each predicting face/background scores and box offsets
against one square anchor of side 4 * stride. Post-processing follows the original
``batch_detect`` + ``detect_from_batch`` + ``get_detections_for_batch``: softmax, anchors
scoring above 0.05, SSD decoding with variances (0.1, 0.2), NMS at IoU 0.3, faces scoring
above 0.5, the best one kept, clipped at 0 and truncated to int.
"""
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.checkpoint import load_state_dict_file, load_strict

BGR_MEAN = (104.0, 117.0, 123.0)   # subtracted from RGB-ordered pixels, as the original does
CANDIDATE_SCORE = 0.05
FACE_SCORE = 0.5
NMS_IOU = 0.3
VARIANCES = (0.1, 0.2)
HEAD_STRIDES = (4, 8, 16, 32, 64, 128)
# frames x height x width per forward pass. On CPU one key frame (640x360 by default) at a time: two per
# pass ran no faster (2.14 vs 2.11-2.17 s per two frames) and held 100-180 MB more at the peak.
MAX_PIXELS_PER_FORWARD = {"cpu": 400_000, "cuda": 8_000_000}

Box = Tuple[int, int, int, int]


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (key: ``weight``)."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = 1e-10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=kernel, stride=stride, padding=padding)


class S3FD(nn.Module):
    """The S3FD network. Input (B, 3, H, W) mean-subtracted float; output 6 (scores, offsets) pairs."""

    # (name, in, out) of the VGG trunk, in order; a max-pool follows conv*_2/conv*_3 of blocks 1-5
    VGG_BLOCKS = (
        (("conv1_1", 3, 64), ("conv1_2", 64, 64)),
        (("conv2_1", 64, 128), ("conv2_2", 128, 128)),
        (("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256)),
        (("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512)),
        (("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)),
    )
    # (source feature, channels, score channels); the first head scores 3 background maxout + 1 face
    HEADS = (("conv3_3_norm", 256, 4), ("conv4_3_norm", 512, 2), ("conv5_3_norm", 512, 2),
             ("fc7", 1024, 2), ("conv6_2", 512, 2), ("conv7_2", 256, 2))

    TAPPED = ("conv3_3", "conv4_3", "conv5_3")     # trunk outputs the heads read

    def __init__(self):
        super().__init__()
        for block in self.VGG_BLOCKS:
            for name, cin, cout in block:
                self.add_module(name, _conv(cin, cout))
        self.fc6 = _conv(512, 1024, padding=3)
        self.fc7 = _conv(1024, 1024, kernel=1, padding=0)
        self.conv6_1 = _conv(1024, 256, kernel=1, padding=0)
        self.conv6_2 = _conv(256, 512, stride=2)
        self.conv7_1 = _conv(512, 128, kernel=1, padding=0)
        self.conv7_2 = _conv(128, 256, stride=2)
        self.conv3_3_norm = L2Norm(256, scale=10)
        self.conv4_3_norm = L2Norm(512, scale=8)
        self.conv5_3_norm = L2Norm(512, scale=5)
        for source, channels, n_scores in self.HEADS:
            self.add_module(f"{source}_mbox_conf", _conv(channels, n_scores))
            self.add_module(f"{source}_mbox_loc", _conv(channels, 4))

    def forward(self, x: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """x: (B, 3, H, W) -> per head (logits (B, 2, h, w), offsets (B, 4, h, w))."""
        taps = {}
        h = x
        for block in self.VGG_BLOCKS:
            for name, _, _ in block:
                h = F.relu(getattr(self, name)(h), inplace=True)
            if block[-1][0] in self.TAPPED:      # conv1_2's and conv2_2's maps (the largest) are not kept
                taps[block[-1][0]] = h
            h = F.max_pool2d(h, 2, 2)
        h = F.relu(self.fc7(F.relu(self.fc6(h), inplace=True)), inplace=True)
        taps["fc7"] = h
        h = F.relu(self.conv6_2(F.relu(self.conv6_1(h), inplace=True)), inplace=True)
        taps["conv6_2"] = h
        h = F.relu(self.conv7_2(F.relu(self.conv7_1(h), inplace=True)), inplace=True)
        taps["conv7_2"] = h
        feats = {
            "conv3_3_norm": self.conv3_3_norm(taps["conv3_3"]),
            "conv4_3_norm": self.conv4_3_norm(taps["conv4_3"]),
            "conv5_3_norm": self.conv5_3_norm(taps["conv5_3"]),
            "fc7": taps["fc7"], "conv6_2": taps["conv6_2"], "conv7_2": taps["conv7_2"],
        }
        outputs = []
        for source, _, n_scores in self.HEADS:
            scores = getattr(self, f"{source}_mbox_conf")(feats[source])
            if n_scores == 4:   # max-out over the three background channels
                background = scores[:, :3].max(dim=1, keepdim=True).values
                scores = torch.cat([background, scores[:, 3:]], dim=1)
            outputs.append((scores, getattr(self, f"{source}_mbox_loc")(feats[source])))
        return outputs


def nms(dets: np.ndarray, iou_threshold: float = NMS_IOU) -> List[int]:
    """Greedy NMS over (N, 5) [x1, y1, x2, y2, score] with the original's +1 pixel areas."""
    if len(dets) == 0:
        return []
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        overlap = w * h / (areas[best] + areas[rest] - w * h)
        order = rest[overlap <= iou_threshold]
    return keep


def decode_heads(outputs, frame_index: int) -> np.ndarray:
    """Candidate faces of one frame: (N, 5) [x1, y1, x2, y2, score] for anchors scoring > 0.05."""
    found = []
    for level, (logits, offsets) in enumerate(outputs):
        stride = HEAD_STRIDES[level]
        face_prob = F.softmax(logits[frame_index].float(), dim=0)[1]          # (h, w)
        rows, cols = torch.nonzero(face_prob > CANDIDATE_SCORE, as_tuple=True)
        if rows.numel() == 0:
            continue
        loc = offsets[frame_index].float()[:, rows, cols].T                   # (n, 4)
        centre = torch.stack([cols, rows], dim=1).float() * stride + stride / 2
        size = float(stride * 4)
        xy = centre + loc[:, :2] * VARIANCES[0] * size
        wh = size * torch.exp(loc[:, 2:] * VARIANCES[1])
        top_left = xy - wh / 2
        boxes = torch.cat([top_left, top_left + wh, face_prob[rows, cols, None]], dim=1)
        found.append(boxes.cpu().double().numpy())
    return np.concatenate(found) if found else np.zeros((0, 5))


class S3FDDetector:
    """Batched S3FD face detection on BGR frames.

    weights: path of an original ``s3fd.pth`` or a state dict with its key names.
    """

    name = "s3fd"

    def __init__(self, weights: Union[str, dict], device: Union[str, torch.device] = "cpu"):
        # a file is mapped, not read (its pages come in as the network first runs), and the network is
        # built without initial weights of its own: the file's tensors are taken over
        state = load_state_dict_file(weights, what="S3FD weights", mmap=True) if isinstance(weights, str) else weights
        with torch.device("meta"):
            self.net = S3FD()
        load_strict(self.net, {k: v.float() for k, v in state.items()},
                    source=weights if isinstance(weights, str) else "S3FD state dict", assign=True)
        self.device = torch.device(device)
        self.net.to(self.device).eval()

    @torch.no_grad()
    def detect_faces(self, frames_bgr: np.ndarray) -> List[np.ndarray]:
        """All faces per frame after NMS, best first: list of (n, 5) [x1, y1, x2, y2, score]."""
        frames_bgr = np.asarray(frames_bgr)
        if frames_bgr.ndim != 4 or frames_bgr.shape[-1] != 3:
            raise ValueError(f"frames must be (N, H, W, 3) BGR uint8, got {frames_bgr.shape}")
        budget = MAX_PIXELS_PER_FORWARD.get(self.device.type, MAX_PIXELS_PER_FORWARD["cpu"])
        per_forward = max(1, budget // (frames_bgr.shape[1] * frames_bgr.shape[2]))
        mean = torch.tensor(BGR_MEAN, device=self.device).view(1, 3, 1, 1)
        results = []
        for start in range(0, len(frames_bgr), per_forward):
            chunk = torch.from_numpy(np.ascontiguousarray(frames_bgr[start:start + per_forward, ..., ::-1]))
            chunk = chunk.to(self.device).permute(0, 3, 1, 2).float() - mean
            outputs = self.net(chunk)
            for i in range(chunk.shape[0]):
                dets = decode_heads(outputs, i)
                dets = dets[nms(dets)]
                results.append(dets[dets[:, 4] > FACE_SCORE])
        return results

    def detect_batch(self, frames_bgr: np.ndarray) -> List[Optional[Box]]:
        """Per frame the best face as (x1, y1, x2, y2) ints, clipped at 0, or None."""
        boxes = []
        for dets in self.detect_faces(frames_bgr):
            if len(dets) == 0:
                boxes.append(None)
                continue
            x1, y1, x2, y2 = np.clip(dets[0, :4], 0, None)
            boxes.append((int(x1), int(y1), int(x2), int(y2)))
        return boxes
