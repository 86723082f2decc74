"""TalkLip's training losses: the generator's objective and the discriminator's.

Generator: ``(1 - lip_w - perp_w) * L1 + perp_w * perceptual (GAN) + lip_w * expert CE + cont_w *
contrastive``, the last two when the stage plan says so (``training.curriculum.stage_plan``: stage 2
on, as the original).
"""
from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.avhubert.ensemble import ExpertEnsemble
from models.avhubert.model import AVHubertSeq2Seq
from models.avhubert.expert_input import images_to_avhubert, lip_reading_loss
from models.talklip import TalkLip, TalkLipDiscriminator, bce
from training.config import LossWeights
from training.curriculum import StagePlan
from training.mouth_augment import CropAugment

# The mouth in TalkLip's 96 x 96 face crop (x0, x1, y0, y1 as fractions): the face box's width, 0.58-0.86 of its
# height. Measured on GRID s1's copies, whose mouth centre sits at 0.50 / 0.71 of the box (5th-95th percentile 0.49-0.51
# / 0.70-0.73 over 20 clips), the window ~1.4 mouth widths wide. Other face boxes (S3FD's on LRS2) were not measured:
# look at a few training crops with the window drawn before using --mouth_l1_w there.
MOUTH_WINDOW = (0.25, 0.75, 0.58, 0.86)


def weighted_l1(syn: torch.Tensor, gt: torch.Tensor, mouth_w: float) -> torch.Tensor:
    """Mean absolute error, the pixels of ``MOUTH_WINDOW`` counting ``1 + mouth_w``, normalised by the mean weight
    (a uniform error gives the same value as plain L1; ``mouth_w`` 0 is ``F.l1_loss`` itself)."""
    if mouth_w <= 0:
        return F.l1_loss(syn, gt)
    height, width = syn.shape[-2:]
    x0, x1, y0, y1 = MOUTH_WINDOW
    weight = syn.new_ones((height, width))
    weight[round(y0 * height):round(y1 * height), round(x0 * width):round(x1 * width)] += mouth_w
    return ((syn - gt).abs() * weight).mean() / weight.mean()


class Objective(nn.Module):
    """The generator's loss for one batch; the only module DDP wraps on the generator side. The
    expert and the discriminator are used, not owned (their parameters get no gradient here)."""

    def __init__(self, generator: TalkLip, expert: AVHubertSeq2Seq, disc: TalkLipDiscriminator,
                 lip_copies: int = 0, lip_augment: CropAugment = CropAugment()):
        super().__init__()
        self.gen = generator
        self._frozen = (expert, disc)
        self.lip_copies, self.lip_augment = lip_copies, lip_augment

    @property
    def expert(self) -> nn.Module:
        return self._frozen[0]

    @property
    def disc(self) -> nn.Module:
        return self._frozen[1]

    def forward(self, batch: Dict, plan: StagePlan, w: LossWeights) -> Dict[str, torch.Tensor]:
        """-> {'loss', 'l1', 'perc', 'lip', 'cont', 'n_correct', 'total', 'syn' (N, 3, 96, 96)}. In eval
        mode the expert also runs when the plan leaves its losses out, so validation reports its token
        accuracy at every stage."""
        expert, disc = self._frozen
        gen = self.gen
        syn, enc_audio = gen(batch["faces_in"], batch["audio"], batch["padding_mask"], batch["audio_index"],
                             train_encoder=plan.audio_encoder)
        zero = syn.new_zeros(())
        out = {"syn": syn, "lip": zero, "cont": zero, "perc": zero, "n_correct": zero, "total": zero}
        expert_on = plan.expert_losses
        if expert_on or not gen.training:
            video, _ = images_to_avhubert([f.to(syn.device) for f in batch["frames"]], batch["boxes"], syn,
                                          batch["picked"], batch["audio"].shape[2])
            augmenting = expert_on and gen.training and self.lip_copies > 0 and self.lip_augment.active
            # an ensemble's plain reading is needed only for a plain lip loss; otherwise its first member
            # gives the contrastive loss's encoder output and the accuracy, at a third of the cost
            plain_reader = expert
            if isinstance(expert, ExpertEnsemble) and (augmenting or not w.lip_loss):
                plain_reader = expert.members[0]
            res = lip_reading_loss(plain_reader, video, batch["padding_mask"], batch["target"],
                                   batch["prev_output_tokens"])
            out.update(lip=res["loss"], n_correct=res["n_correct"], total=res["total"])
            if augmenting:
                out["lip"] = self.augmented_lip_loss(expert, video, batch)
            if w.cont_w > 0:
                idx = batch["audio_index"]
                vid = res["encoder_out"].transpose(0, 1).reshape(-1, res["encoder_out"].shape[-1]).index_select(0, idx)
                aud = enc_audio.transpose(0, 1).reshape(-1, enc_audio.shape[-1]).index_select(0, idx)
                out["cont"] = gen.sync_net(vid.float(), aud.float())
        if w.perp_w > 0:
            # the perceptual loss trains the generator only: the discriminator's weights stay out of
            # this graph (it learns from disc_loss, on detached faces)
            trainable = [p.requires_grad for p in disc.parameters()]
            disc.requires_grad_(False)
            out["perc"] = disc.perceptual_loss(syn)
            for p, flag in zip(disc.parameters(), trainable):
                p.requires_grad_(flag)
        out["l1"] = weighted_l1(syn, batch["faces_gt"], w.mouth_l1_w)
        lip_term = w.lip_w * out["lip"] * expert_on if w.lip_loss else zero
        out["loss"] = (lip_term + w.perp_w * out["perc"]
                       + (1.0 - w.lip_w - w.perp_w) * out["l1"] + w.cont_w * out["cont"] * expert_on)
        return out


    def augmented_lip_loss(self, expert, video: torch.Tensor, batch: Dict) -> torch.Tensor:
        """The lip loss averaged over ``lip_copies`` randomly changed copies of the mouth crops ``video``
        (B, 1, T, 88, 88) (torch's global generator, which the trainer seeds per step)."""
        k = self.lip_copies
        copies = self.lip_augment(video.repeat_interleave(k, 0))
        res = lip_reading_loss(expert, copies, batch["padding_mask"].repeat_interleave(k, 0),
                               batch["target"].repeat_interleave(k, 0), batch["prev_output_tokens"].repeat_interleave(k, 0))
        return res["loss"] / k


def disc_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The discriminator's BCE on real faces (label 1) and generated ones (label 0, detached), and
    its accuracy ('disc_acc': 0.5 for a discriminator that learnt nothing, or one that collapsed)."""
    real_logits, fake_logits = disc(real, logits=True), disc(fake.detach(), logits=True)
    r, f = bce(real_logits, 1.0), bce(fake_logits, 0.0)
    acc = ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean()).detach() / 2
    return {"disc_real": r, "disc_fake": f, "disc": r + f, "disc_acc": acc}
