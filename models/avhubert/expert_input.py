"""The expert's differentiable input path and criterion, for training under it: the path from generated
faces to the expert's mouth input, target collation, and TalkLip's label-smoothed cross-entropy."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from models.avhubert.generate import EOS, PAD

ROI_SIZE = 88           # AV-HuBERT's mouth crop
ROI_SOURCE = 96         # TalkLip crops the central 96 x 96 of the frame first
ROI_MEAN, ROI_STD = 0.421, 0.165
BGR_TO_GREY = (0.114, 0.587, 0.299)


def collate_targets(targets: Sequence[Sequence[int]], pad: int = PAD, eos: int = EOS):
    """Id lists ending in </s> -> (target (B, L), prev_output_tokens (B, L), lengths (B,), ntokens),
    right-padded; prev_output_tokens is the target shifted right with </s> first (fairseq's
    collate_tokens with move_eos_to_beginning)."""
    lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    width = max(1, int(lengths.max()))        # an empty target (no label) is all padding: no loss
    target = torch.full((len(targets), width), pad, dtype=torch.long)
    prev = torch.full((len(targets), width), pad, dtype=torch.long)
    for i, ids in enumerate(targets):
        ids = torch.as_tensor(list(ids), dtype=torch.long)
        target[i, :len(ids)] = ids
        prev[i, 0] = eos
        prev[i, 1:len(ids)] = ids[:-1]
    return target, prev, lengths, int(lengths.sum())


def label_smoothed_nll_loss(lprobs: torch.Tensor, target: torch.Tensor, epsilon: float,
                            ignore_index: int = PAD) -> Tuple[torch.Tensor, torch.Tensor]:
    """fairseq's label_smoothed_nll_loss, summed. lprobs (N, V) log-probs, target (N,)."""
    target = target.unsqueeze(-1)
    nll = -lprobs.gather(dim=-1, index=target)
    smooth = -lprobs.sum(dim=-1, keepdim=True)
    pad_mask = target.eq(ignore_index)
    nll, smooth = nll.masked_fill(pad_mask, 0.0).sum(), smooth.masked_fill(pad_mask, 0.0).sum()
    eps_i = epsilon / (lprobs.size(-1) - 1)
    return (1.0 - epsilon - eps_i) * nll + eps_i * smooth, nll


def lip_reading_loss(model, video: torch.Tensor, padding_mask: torch.Tensor, target: torch.Tensor,
                     prev_output_tokens: torch.Tensor, label_smoothing: float = 0.1,
                     audio: Optional[torch.Tensor] = None) -> dict:
    """TalkLip's expert criterion: loss and nll (sums over tokens), n_correct and total for accuracy,
    and the expert's encoder output (T, B, C) with its padding mask for the contrastive loss. ``video``
    or ``audio`` (B, 104, T) may be None: the model reads the other one alone."""
    logits, (enc, enc_mask) = model(video=video, audio=audio, padding_mask=padding_mask,
                                    prev_output_tokens=prev_output_tokens, return_encoder_out=True)
    lprobs = F.log_softmax(logits.float(), dim=-1).view(-1, logits.size(-1))
    flat_target = target.reshape(-1)
    loss, nll = label_smoothed_nll_loss(lprobs, flat_target, label_smoothing)
    mask = flat_target.ne(PAD)
    n_correct = (lprobs.argmax(1).eq(flat_target) & mask).sum()
    return {"loss": loss, "nll_loss": nll, "n_correct": n_correct, "total": mask.sum(),
            "encoder_out": enc, "encoder_padding_mask": enc_mask}


def paste_faces(frames: torch.Tensor, boxes: torch.Tensor, faces: torch.Tensor,
                frame_index: torch.Tensor) -> torch.Tensor:
    """Differentiably put generated faces back into full frames.

    frames: (T, H, W, 3) float in [0, 255]; boxes: (T, 4) int x1 y1 x2 y2; faces: (N, 3, h, w) in
    [0, 1]; frame_index: (N,) which frame each face replaces. Returns new frames; gradients flow
    to ``faces``. Boxes are clipped to the frame (the original clipped y2 to the width)."""
    height, width = frames.shape[1:3]
    out = frames.clone()
    for face, index in zip(faces, frame_index.tolist()):
        x1, y1, x2, y2 = (int(v) for v in boxes[index])
        x1, x2 = max(0, x1), min(width, x2)
        y1, y2 = max(0, y1), min(height, y2)
        resized = F.interpolate(face[None] * 255.0, size=(y2 - y1, x2 - x1), mode="bilinear",
                                align_corners=False)[0]
        out[index, y1:y2, x1:x2, :] = resized.permute(1, 2, 0).to(out.dtype)
    return out


def frames_to_mouth_rois(frames: torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) BGR float in [0, 255] -> (T, 88, 88) normalised grey mouth crops: the central
    96 x 96 region (LRS2 faces are centred), grey, /255, central 88 x 88, (x - 0.421) / 0.165."""
    height, width = frames.shape[1:3]
    grey = sum(frames[..., c] * w for c, w in enumerate(BGR_TO_GREY))
    top, left = (height - ROI_SOURCE) // 2, (width - ROI_SOURCE) // 2
    grey = grey[:, max(0, top): top + ROI_SOURCE, max(0, left): left + ROI_SOURCE] / 255.0
    inner = (grey.shape[1] - ROI_SIZE) // 2, (grey.shape[2] - ROI_SIZE) // 2
    grey = grey[:, inner[0]: inner[0] + ROI_SIZE, inner[1]: inner[1] + ROI_SIZE]
    return (grey - ROI_MEAN) / ROI_STD


def collate_videos(rois: List[torch.Tensor], length: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """List of (T_i, 88, 88) -> video (B, 1, T, 88, 88) zero-padded, padding mask (B, T)."""
    steps = max(length, max(r.shape[0] for r in rois))
    video = rois[0].new_zeros(len(rois), 1, steps, *rois[0].shape[1:])
    mask = torch.ones(len(rois), steps, dtype=torch.bool, device=rois[0].device)
    for i, roi in enumerate(rois):
        video[i, 0, :roi.shape[0]] = roi
        mask[i, :roi.shape[0]] = False
    return video, mask


def images_to_avhubert(frames: List[torch.Tensor], boxes: List[torch.Tensor], faces: torch.Tensor,
                       frame_indices: List[torch.Tensor], length: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """The original ``images2avhubert``: paste each clip's generated faces (consecutive rows of
    ``faces``) into its frames, then mouth crops. -> video (B, 1, T, 88, 88), padding mask (B, T),
    T at least ``length`` (the batch's audio length, so both encoders' rows line up)."""
    rois, start = [], 0
    for clip_frames, clip_boxes, index in zip(frames, boxes, frame_indices):
        pasted = paste_faces(clip_frames.float(), clip_boxes, faces[start:start + len(index)], index)
        rois.append(frames_to_mouth_rois(pasted))
        start += len(index)
    return collate_videos(rois, length)
