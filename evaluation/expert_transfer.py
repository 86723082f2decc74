"""Does the expert's gradient draw mouths another reader can read? The transfer probe.

Start from mouth crops that are hard to read (the test split's true crops blurred in space and time,
or a synthesized test split), change their pixels by Adam under the expert's lip-reading loss for the
true transcript, exactly the signal TalkLip's lip loss gives the generator, and let two readers decode
the result: the expert whose gradient was used, and an independent observer. An expert that is only
fooled (it reads the crops perfectly, the observer does not) teaches a generator to fool it; an expert
whose gradient transfers teaches mouths.

Crops are the readers' own input (``frames_to_mouth_rois``: the central 88 x 88 grey crop, normalised).
The loss is the lip loss as ``train.py`` computes it (``lip_reading_loss``, label-smoothed, summed over
tokens), optionally averaged over ``lip_augment`` augmented copies as ``train.py --lip_augment`` does.
"""
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import torch

from utils.wer import error_rates
from models.avhubert.ensemble import ExpertEnsemble
from models.avhubert.generate import EOS
from models.avhubert.reading import decode_clip
from models.avhubert.expert_input import ROI_STD, collate_targets, collate_videos, lip_reading_loss
from training.mouth_augment import ROI_HIGH, ROI_LOW, CropAugment, blur_rois


@dataclass(frozen=True)
class ProbeOptions:
    steps: int = 60             # Adam steps on the crops
    lr: float = 0.05            # in normalised units (0.05 is ~2 grey levels)
    blur_sigma_px: float = 3.0  # the start's spatial blur (true crops only)
    blur_frames: int = 9        # the start's moving average over frames (true crops only)
    lip_augment: int = 0        # the loss averaged over this many augmented copies (0: the plain loss)
    augment: CropAugment = CropAugment()   # what each copy draws, when lip_augment > 0
    seed: int = 0               # of the augmentations' draws


@dataclass
class ProbeClip:
    name: str
    transcript: str
    rois: torch.Tensor          # (T, 88, 88) the start, normalised


def lip_loss(expert, rois: Sequence[torch.Tensor], targets: Sequence[List[int]], copies: int = 0,
             augment: CropAugment = CropAugment(), generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The expert's lip-reading loss of each clip's crops ``rois[i]`` (T_i, 88, 88) for its ids
    ``targets[i]`` (ending in </s>), summed over clips; averaged over ``copies`` augmented copies of every
    clip when > 0. Differentiable in the crops. The clips never mix (the expert is in eval mode and masks
    the padding), so each clip's gradient is its own loss's."""
    video, mask = collate_videos(list(rois))
    target, prev, _, _ = collate_targets(list(targets))
    if copies <= 0:
        return lip_reading_loss(expert, video, mask, target, prev)["loss"]
    video = augment(video.repeat_interleave(copies, 0), generator)
    return lip_reading_loss(expert, video, mask.repeat_interleave(copies, 0), target.repeat_interleave(copies, 0),
                            prev.repeat_interleave(copies, 0))["loss"] / copies


def optimise_crops(expert, rois: Sequence[torch.Tensor], targets: Sequence[List[int]], opts: ProbeOptions) -> Dict:
    """Adam on the pixels of every clip's crops under the expert's loss; crops clamped to [black, white]
    after each step. -> {'rois': the results (detached), 'loss_before', 'loss_after': per clip}."""
    generator = torch.Generator().manual_seed(opts.seed)
    pixels = [r.clone().requires_grad_(True) for r in rois]
    optimiser = torch.optim.Adam(pixels, lr=opts.lr)
    for _ in range(opts.steps):
        loss = lip_loss(expert, pixels, targets, opts.lip_augment, opts.augment, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            for p in pixels:
                p.clamp_(ROI_LOW, ROI_HIGH)
    with torch.no_grad():
        before = [float(lip_loss(expert, [r], [t])) for r, t in zip(rois, targets)]
        after = [float(lip_loss(expert, [p], [t])) for p, t in zip(pixels, targets)]
    return {"rois": [p.detach() for p in pixels], "loss_before": before, "loss_after": after}


def capped_wer(reference: str, hypothesis: str) -> float:
    """One clip's WER, at most 1: a long garbage decode counts as a clip read wrong, not as five."""
    return min(1.0, error_rates([reference], [hypothesis])["wer"])


def read_all(reader, clips_rois: Sequence[torch.Tensor], references: Sequence[str]) -> Dict:
    """Greedy decoding of each clip -> capped mean WER, corpus WER and the hypotheses."""
    hyps = [decode_clip(reader, rois, beam=1) for rois in clips_rois]
    return {"wer_capped": sum(capped_wer(r, h) for r, h in zip(references, hyps)) / max(1, len(hyps)),
            "wer_corpus": error_rates(list(references), hyps)["wer"], "hypotheses": hyps}


def run_probe(expert, observer, clips: Sequence[ProbeClip], opts: ProbeOptions) -> Dict:
    """The probe over ``clips``: both readers' WER on the start and after the expert's gradient, the
    expert's loss before/after, and the mean absolute pixel change in grey levels (0-255)."""
    expert.eval()
    observer.eval()
    for p in expert.parameters():
        p.requires_grad_(False)
    refs = [c.transcript for c in clips]
    targets = [expert.codec.encode(c.transcript) for c in clips]
    for clip, tokens in zip(clips, targets):
        if len(tokens) < 2 or tokens[-1] != EOS:
            raise ValueError(f"{clip.name}: the expert's codec gave no target for {clip.transcript!r}")
    starts = [c.rois for c in clips]
    out = optimise_crops(expert, starts, targets, opts)
    after = out["rois"]
    change = [float((a - s).abs().mean()) * ROI_STD * 255.0 for a, s in zip(after, starts)]
    result = {"clips": len(clips), **{k: v for k, v in asdict(opts).items() if k != "augment"},
              "augment": asdict(opts.augment), "mean_pixel_change_grey": sum(change) / max(1, len(change)),
              "expert_loss_before": sum(out["loss_before"]) / max(1, len(clips)),
              "expert_loss_after": sum(out["loss_after"]) / max(1, len(clips))}
    members = list(expert.members) if isinstance(expert, ExpertEnsemble) else [expert]
    readers = [("expert", members[0]), ("observer", observer)]
    readers += [(f"expert_member_{i}", m) for i, m in enumerate(members[1:], 1)]
    for who, reader in readers:
        before, done = read_all(reader, starts, refs), read_all(reader, after, refs)
        result[who] = {"before": {k: before[k] for k in ("wer_capped", "wer_corpus")},
                       "after": {k: done[k] for k in ("wer_capped", "wer_corpus")},
                       "hypotheses_after": done["hypotheses"]}
    result["references"] = refs
    return result


def blurred_start(rois: torch.Tensor, opts: ProbeOptions) -> torch.Tensor:
    """The true crops made hard to read: ``opts``' spatial blur, then its moving average over frames."""
    return blur_rois(rois, opts.blur_sigma_px, opts.blur_frames)
