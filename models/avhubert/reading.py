"""Reading lips from a video file with an AV-HuBERT seq2seq model: mouth crops and decoding.

Used by evaluation (observer 1) and by training (pseudo-labels for clips without a transcript).
"""
import cv2
import numpy as np
import torch

from face_detection.boxes import crop_face
from models.avhubert.expert_input import ROI_MEAN, ROI_SIZE, ROI_STD, frames_to_mouth_rois
from utils.errors import MediaError
from utils.video import VideoReader

# The mouth square inside TalkLip's 96 x 96 face crop: x 20..76, y 40..96.
MOUTH_IN_FACE = (20, 40, 76, 96)


def mouth_rois(video_path: str, boxes=None) -> torch.Tensor:
    """(T, 88, 88) normalised grey mouth crops of a video: from the face boxes when given,
    else the central crop of the whole frame."""
    rois = []
    with VideoReader(video_path) as reader:
        for i, frame in enumerate(reader):
            if boxes is None:
                rois.append(frames_to_mouth_rois(torch.from_numpy(frame[None]).float())[0])
                continue
            if i >= len(boxes):
                raise MediaError(f"{video_path} has more frames than its {len(boxes)} face boxes: rerun bbx_extract")
            x1, y1, x2, y2 = MOUTH_IN_FACE
            mouth = cv2.resize(crop_face(frame, boxes[i])[y1:y2, x1:x2], (96, 96))
            grey = cv2.cvtColor(mouth, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
            off = (96 - ROI_SIZE) // 2
            rois.append((torch.from_numpy(grey[off:off + ROI_SIZE, off:off + ROI_SIZE]) - ROI_MEAN) / ROI_STD)
    if not rois:
        raise MediaError(f"{video_path} has no frames: re-synthesize it")
    return torch.stack(rois)


@torch.no_grad()
def decode_clip(model, rois: torch.Tensor, beam: int = 50, max_len_a: float = 1.0, max_len_b: int = 0,
                lenpen: float = 1.0) -> str:
    device = next(model.parameters()).device
    video = rois[None, None].to(device)
    mask = torch.zeros(1, rois.shape[0], dtype=torch.bool, device=device)
    ids = model.generate(video=video, padding_mask=mask, beam=beam, max_len_a=max_len_a,
                         max_len_b=max_len_b, lenpen=lenpen)[0]
    return model.decode_text(ids)
