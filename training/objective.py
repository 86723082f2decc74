"""TalkLip's training losses: the generator's objective and the discriminator's.

Generator: ``(1 - lip_w - perp_w) * L1 + perp_w * perceptual (GAN) + lip_w * expert CE + cont_w *
contrastive``, the last two from stage 2 on (the original's weights and stage rule).
"""
from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.avhubert.model import AVHubertSeq2Seq
from models.avhubert.training import images_to_avhubert, lip_reading_loss
from models.talklip import TalkLip, TalkLipDiscriminator, bce

EXPERT_STAGE = 2          # the lip-reading expert and the contrastive loss join at this stage


@dataclass(frozen=True)
class LossWeights:
    lip_w: float = 1e-5       # the expert's cross-entropy on the transcript
    perp_w: float = 0.07      # the perceptual (GAN) loss
    cont_w: float = 1e-3      # the audio-visual contrastive loss


class Objective(nn.Module):
    """The generator's loss for one batch; the only module DDP wraps on the generator side. The
    expert and the discriminator are used, not owned (their parameters get no gradient here)."""

    def __init__(self, generator: TalkLip, expert: AVHubertSeq2Seq, disc: TalkLipDiscriminator):
        super().__init__()
        self.gen = generator
        self._frozen = (expert, disc)

    def forward(self, batch: Dict, stage: int, w: LossWeights) -> Dict[str, torch.Tensor]:
        """-> {'loss', 'l1', 'perc', 'lip', 'cont', 'n_correct', 'total', 'syn' (N, 3, 96, 96)}. In eval
        mode the expert also runs before stage 2, so validation reports its token accuracy."""
        expert, disc = self._frozen
        gen = self.gen
        gen.ft = stage >= 1
        syn, enc_audio = gen(batch["faces_in"], batch["audio"], batch["padding_mask"], batch["audio_index"])
        zero = syn.new_zeros(())
        out = {"syn": syn, "lip": zero, "cont": zero, "perc": zero, "n_correct": zero, "total": zero}
        expert_on = stage >= EXPERT_STAGE
        if expert_on or not gen.training:
            video, _ = images_to_avhubert([f.to(syn.device) for f in batch["frames"]], batch["boxes"], syn,
                                          batch["picked"], batch["audio"].shape[2])
            res = lip_reading_loss(expert, video, batch["padding_mask"], batch["target"], batch["prev_output_tokens"])
            out.update(lip=res["loss"], n_correct=res["n_correct"], total=res["total"])
            if w.cont_w > 0:
                idx = batch["audio_index"]
                vid = res["encoder_out"].transpose(0, 1).reshape(-1, res["encoder_out"].shape[-1])[idx]
                aud = enc_audio.transpose(0, 1).reshape(-1, enc_audio.shape[-1])[idx]
                out["cont"] = gen.sync_net(vid.float(), aud.float())
        if w.perp_w > 0:
            out["perc"] = disc.perceptual_loss(syn)
        out["l1"] = F.l1_loss(syn, batch["faces_gt"])
        out["loss"] = (w.lip_w * out["lip"] * expert_on + w.perp_w * out["perc"]
                       + (1.0 - w.lip_w - w.perp_w) * out["l1"] + w.cont_w * out["cont"] * expert_on)
        return out


def disc_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The discriminator's BCE on real faces (label 1) and generated ones (label 0, detached), and
    its accuracy ('disc_acc': 0.5 for a discriminator that learnt nothing, or one that collapsed)."""
    real_logits, fake_logits = disc(real, logits=True), disc(fake.detach(), logits=True)
    r, f = bce(real_logits, 1.0), bce(fake_logits, 0.0)
    acc = ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean()).detach() / 2
    return {"disc_real": r, "disc_fake": f, "disc": r + f, "disc_acc": acc}
