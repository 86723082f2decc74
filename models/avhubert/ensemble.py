"""Several lip readers behind one lip loss: an adversarial pattern that fools one reader rarely fools all.

``ExpertEnsemble`` is called as one ``AVHubertSeq2Seq`` is by ``lip_reading_loss``: it returns the mean of
its members' log-probabilities (a product of experts; ``log_softmax`` of it renormalises), so the lip
loss of the ensemble is the cross-entropy of the members' geometric mean. The encoder output (the
contrastive loss's video side), the vocabulary and decoding are the first member's: the generator's audio encoder
starts from that member's encoder. Every member must share one vocabulary.
"""
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.avhubert.model import AVHubertSeq2Seq
from utils.errors import TalkLipError


class ExpertEnsemble(nn.Module):
    def __init__(self, members: Sequence[AVHubertSeq2Seq], names: Sequence[str] = ()):
        super().__init__()
        if not members:
            raise TalkLipError("an ensemble needs at least one reader")
        names = list(names) or [f"reader {i}" for i in range(len(members))]
        first = members[0].codec
        for member, name in zip(members[1:], names[1:]):
            if member.codec is None or first is None or member.codec.dictionary.symbols != first.dictionary.symbols:
                raise TalkLipError(f"{name} has another vocabulary than {names[0]}: the ensemble's readers must "
                                 f"share one (train_expert.py --vocab_from {names[0]})")
        self.members = nn.ModuleList(members)

    @property
    def codec(self):
        return self.members[0].codec

    @property
    def encoder(self) -> nn.Module:
        return self.members[0].encoder

    @property
    def decoder(self) -> nn.Module:
        return self.members[0].decoder

    @property
    def eos(self) -> int:
        return self.members[0].eos

    def generate(self, *args, **kwargs):
        """Decoding (pseudo-labels, reports) is the first member's."""
        return self.members[0].generate(*args, **kwargs)

    def decode_text(self, ids):
        return self.members[0].decode_text(ids)

    def extract_features(self, video=None, audio=None, padding_mask=None):
        return self.members[0].extract_features(video=video, audio=audio, padding_mask=padding_mask)

    def forward(self, video=None, audio=None, padding_mask=None, prev_output_tokens=None,
                return_encoder_out: bool = False):
        """-> the members' mean log-probabilities (B, L, V) (and the first member's encoder output)."""
        lprobs, first_enc = [], None
        for member in self.members:
            logits, enc = member(video=video, audio=audio, padding_mask=padding_mask,
                                 prev_output_tokens=prev_output_tokens, return_encoder_out=True)
            lprobs.append(F.log_softmax(logits.float(), dim=-1))
            first_enc = enc if first_enc is None else first_enc
        mean = torch.stack(lprobs).mean(0)
        return (mean, first_enc) if return_encoder_out else mean
