"""Lip-reading observer 2: the conformer lip reader TalkLip evaluates with, without espnet.

A 3D-conv + ResNet-18 visual front end (deep_avsr's ``VisualFrontend``), espnet's conformer
encoder (macaron feed-forwards, relative-position self-attention, convolution module, swish),
espnet's transformer decoder and a CTC projection, over 40 characters (0 blank, 39 <sos>/<eos>).
State-dict keys are espnet's (``visual_frontend.*``, ``encoder.embed.0``, ``encoder.encoders.N.*``,
``decoder.decoders.N.*``, ``ctc.ctc_lo``), so the released observer-2 file loads strictly; the
sizes (``conformer_arg.txt``: adim 256, 4 heads, 2048 units, 12 + 6 blocks) are read from it.
"""
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.checkpoint import load_state_dict_file, load_strict, strip_prefixes
from utils.errors import CheckpointError

CHAR_TO_INDEX = {" ": 1, "'": 22, "1": 30, "0": 29, "3": 37, "2": 32, "5": 34, "4": 38, "7": 36, "6": 35,
                 "9": 31, "8": 33, "A": 5, "C": 17, "B": 20, "E": 2, "D": 12, "G": 16, "F": 19, "I": 6,
                 "H": 9, "K": 24, "J": 25, "M": 18, "L": 11, "O": 4, "N": 7, "Q": 27, "P": 21, "S": 8,
                 "R": 10, "U": 13, "T": 3, "W": 15, "V": 23, "Y": 14, "X": 26, "Z": 28}
SPACE, EOS, NUM_CHARS = 1, 39, 40
ESPNET_LN_EPS = 1e-12        # espnet's LayerNorm; the embedding's LayerNorm is torch's (1e-5)


def swish(x):
    return x * torch.sigmoid(x)


# ---------------------------------------------------------------- visual front end (deep_avsr)
def _bn(c):
    return nn.BatchNorm2d(c, momentum=0.01, eps=0.001)


class ResNetLayer(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1a = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1a = _bn(cout)
        self.conv2a = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.stride = stride
        self.downsample = nn.Conv2d(cin, cout, 1, stride, bias=False)   # stored even when unused
        self.outbna = _bn(cout)
        self.conv1b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn1b = _bn(cout)
        self.conv2b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.outbnb = _bn(cout)

    def forward(self, x):
        y = self.conv2a(F.relu(self.bn1a(self.conv1a(x))))
        y = y + (x if self.stride == 1 else self.downsample(x))
        mid = y
        y = self.conv2b(F.relu(self.bn1b(self.conv1b(F.relu(self.outbna(y))))))
        return F.relu(self.outbnb(y + mid))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = ResNetLayer(64, 64, 1)
        self.layer2 = ResNetLayer(64, 128, 2)
        self.layer3 = ResNetLayer(128, 256, 2)
        self.layer4 = ResNetLayer(256, 512, 2)
        self.avgpool = nn.AvgPool2d(4, 1)

    def forward(self, x):
        return self.avgpool(self.layer4(self.layer3(self.layer2(self.layer1(x)))))


class VisualFrontend(nn.Module):
    """(B, 1, T, 112, 112) grey mouth crops -> per-frame 512-d features, re-padded to ``target_len``
    with the padding split before and after each clip (the original's ``outpadding``)."""

    def __init__(self):
        super().__init__()
        self.frontend3D = nn.Sequential(nn.Conv3d(1, 64, (5, 7, 7), (1, 2, 2), (2, 3, 3), bias=False),
                                        _bn(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        self.resnet = ResNet()

    def forward(self, video: torch.Tensor, lengths: torch.Tensor, target_len: torch.Tensor) -> torch.Tensor:
        x = self.frontend3D[0](video).transpose(1, 2)                     # (B, T, 64, H, W)
        frames = torch.cat([x[i, :int(n)] for i, n in enumerate(lengths)])
        feats = self.resnet(self.frontend3D[1:](frames)).flatten(1)       # (sum T, 512)
        width = int(target_len.max())
        out = []
        for clip, n, want in zip(feats.split([int(n) for n in lengths]), lengths, target_len):
            left = (int(want) - int(n)) // 2
            out.append(F.pad(clip, (0, 0, left, width - left - int(n))))
        return torch.stack(out)


# ---------------------------------------------------------------- espnet building blocks
class FeedForward(nn.Module):
    def __init__(self, dim, units, activation):
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(dim, units), nn.Linear(units, dim)
        self.activation = activation

    def forward(self, x):
        return self.w_2(self.activation(self.w_1(x)))


class MultiHeadedAttention(nn.Module):
    def __init__(self, heads, dim):
        super().__init__()
        self.h, self.d_k = heads, dim // heads
        self.linear_q, self.linear_k = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.linear_v, self.linear_out = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def heads(self, linear, x):                                  # (B, T, C) -> (B, h, T, d_k)
        return linear(x).view(x.shape[0], -1, self.h, self.d_k).transpose(1, 2)

    def attend(self, v, scores, mask):
        """mask: (B, 1 or T1, T2) True where attention is allowed."""
        if mask is not None:
            blocked = ~mask.unsqueeze(1)
            scores = scores.masked_fill(blocked, torch.finfo(scores.dtype).min)
            attn = torch.softmax(scores, dim=-1).masked_fill(blocked, 0.0)
        else:
            attn = torch.softmax(scores, dim=-1)
        x = torch.matmul(attn, v).transpose(1, 2).reshape(v.shape[0], -1, self.h * self.d_k)
        return self.linear_out(x)

    def forward(self, query, key, value, mask):
        q, k, v = self.heads(self.linear_q, query), self.heads(self.linear_k, key), self.heads(self.linear_v, value)
        return self.attend(v, torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.d_k), mask)


class RelPositionMultiHeadedAttention(MultiHeadedAttention):
    """Transformer-XL style attention with learnt biases u, v (espnet's 'rel_selfattn')."""

    def __init__(self, heads, dim):
        super().__init__(heads, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, dim // heads))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, dim // heads))

    @staticmethod
    def rel_shift(x):
        """(B, h, T, 2T-1) scores over relative positions T-1..-(T-1) -> (B, h, T, T) by key index."""
        b, h, t, p = x.shape
        x = torch.cat([x.new_zeros(b, h, t, 1), x], dim=-1).view(b, h, p + 1, t)
        return x[:, :, 1:].reshape(b, h, t, p)[..., : p // 2 + 1]

    def forward(self, x, pos_emb, mask):
        q = self.linear_q(x).view(x.shape[0], -1, self.h, self.d_k)          # (B, T, h, d_k)
        k, v = self.heads(self.linear_k, x), self.heads(self.linear_v, x)
        p = self.linear_pos(pos_emb).view(pos_emb.shape[0], -1, self.h, self.d_k).transpose(1, 2)
        ac = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        bd = self.rel_shift(torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1)))
        return self.attend(v, (ac + bd) / math.sqrt(self.d_k), mask)


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(P,) positions -> (P, dim) with sin on even and cos on odd channels."""
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    pe = torch.zeros(len(positions), dim)
    pe[:, 0::2] = torch.sin(positions[:, None] * div)
    pe[:, 1::2] = torch.cos(positions[:, None] * div)
    return pe


class RelPositionalEncoding(nn.Module):
    """x * sqrt(d), and encodings of relative positions T-1 .. -(T-1)."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        t = x.shape[1]
        pos = sinusoid(torch.arange(t - 1, -t, -1, dtype=torch.float32), self.dim).to(x)
        return x * math.sqrt(self.dim), pos[None]


class ConvolutionModule(nn.Module):
    def __init__(self, dim, kernel):
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise_conv = nn.Conv1d(dim, dim, kernel, padding=(kernel - 1) // 2, groups=dim)
        self.norm = nn.BatchNorm1d(dim)
        self.pointwise_conv2 = nn.Conv1d(dim, dim, 1)

    def forward(self, x):                                              # (B, T, C)
        x = F.glu(self.pointwise_conv1(x.transpose(1, 2)), dim=1)
        x = self.pointwise_conv2(swish(self.norm(self.depthwise_conv(x))))
        return x.transpose(1, 2)


def _ln(dim):
    return nn.LayerNorm(dim, eps=ESPNET_LN_EPS)


class ConformerLayer(nn.Module):
    def __init__(self, dim, heads, units, kernel):
        super().__init__()
        self.self_attn = RelPositionMultiHeadedAttention(heads, dim)
        self.feed_forward = FeedForward(dim, units, swish)
        self.feed_forward_macaron = FeedForward(dim, units, swish)
        self.conv_module = ConvolutionModule(dim, kernel)
        self.norm_ff, self.norm_mha, self.norm_ff_macaron = _ln(dim), _ln(dim), _ln(dim)
        self.norm_conv, self.norm_final = _ln(dim), _ln(dim)

    def forward(self, x, pos_emb, mask):
        x = x + 0.5 * self.feed_forward_macaron(self.norm_ff_macaron(x))
        x = x + self.self_attn(self.norm_mha(x), pos_emb, mask)
        x = x + self.conv_module(self.norm_conv(x))
        x = x + 0.5 * self.feed_forward(self.norm_ff(x))
        return self.norm_final(x)


class ConformerEncoder(nn.Module):
    def __init__(self, idim, dim, heads, units, blocks, kernel):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(idim, dim), nn.LayerNorm(dim), nn.Dropout(0.0), RelPositionalEncoding(dim))
        self.encoders = nn.ModuleList([ConformerLayer(dim, heads, units, kernel) for _ in range(blocks)])
        self.after_norm = _ln(dim)

    def forward(self, x, mask):
        x, pos = self.embed[3](self.embed[1](self.embed[0](x)))
        for layer in self.encoders:
            x = layer(x, pos, mask)
        return self.after_norm(x)


class DecoderLayer(nn.Module):
    def __init__(self, dim, heads, units):
        super().__init__()
        self.self_attn, self.src_attn = MultiHeadedAttention(heads, dim), MultiHeadedAttention(heads, dim)
        self.feed_forward = FeedForward(dim, units, F.relu)
        self.norm1, self.norm2, self.norm3 = _ln(dim), _ln(dim), _ln(dim)

    def forward(self, x, x_mask, memory, memory_mask):
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, x_mask)
        h = self.norm2(x)
        x = x + self.src_attn(h, memory, memory, memory_mask)
        return x + self.feed_forward(self.norm3(x))


class TransformerDecoder(nn.Module):
    def __init__(self, odim, dim, heads, units, blocks):
        super().__init__()
        self.embed = nn.Sequential(nn.Embedding(odim, dim))
        self.decoders = nn.ModuleList([DecoderLayer(dim, heads, units) for _ in range(blocks)])
        self.after_norm = _ln(dim)
        self.output_layer = nn.Linear(dim, odim)
        self.dim = dim

    def forward(self, tokens, tokens_mask, memory, memory_mask):
        t = tokens.shape[1]
        x = self.embed[0](tokens) * math.sqrt(self.dim) + sinusoid(torch.arange(t, dtype=torch.float32),
                                                                    self.dim).to(memory)
        for layer in self.decoders:
            x = layer(x, tokens_mask, memory, memory_mask)
        return self.output_layer(self.after_norm(x))


class CTC(nn.Module):
    def __init__(self, odim, dim):
        super().__init__()
        self.ctc_lo = nn.Linear(dim, odim)


@dataclass
class ConformerConfig:
    adim: int = 256
    aheads: int = 4
    eunits: int = 2048
    elayers: int = 12
    dlayers: int = 6
    cnn_module_kernel: int = 31
    odim: int = NUM_CHARS
    idim: int = 512

    @classmethod
    def from_state_dict(cls, state: Dict[str, torch.Tensor]) -> "ConformerConfig":
        try:
            layers = lambda prefix: len({k.split(".")[2] for k in state if k.startswith(prefix)})
            return cls(adim=state["encoder.embed.0.weight"].shape[0],
                       aheads=state["encoder.encoders.0.self_attn.pos_bias_u"].shape[0],
                       eunits=state["encoder.encoders.0.feed_forward.w_1.weight"].shape[0],
                       elayers=layers("encoder.encoders."), dlayers=layers("decoder.decoders."),
                       cnn_module_kernel=state["encoder.encoders.0.conv_module.depthwise_conv.weight"].shape[-1],
                       odim=state["decoder.output_layer.weight"].shape[0],
                       idim=state["encoder.embed.0.weight"].shape[1])
        except KeyError as exc:
            raise CheckpointError(f"not a conformer lip-reading checkpoint: it lacks {exc}") from None


class ConformerLipReader(nn.Module):
    """``E2E`` of TalkLip's models/conformer_lip_reading.py."""

    def __init__(self, cfg: Optional[ConformerConfig] = None):
        super().__init__()
        cfg = cfg or ConformerConfig()
        self.cfg = cfg
        self.visual_frontend = VisualFrontend()
        self.encoder = ConformerEncoder(cfg.idim, cfg.adim, cfg.aheads, cfg.eunits, cfg.elayers, cfg.cnn_module_kernel)
        self.decoder = TransformerDecoder(cfg.odim, cfg.adim, cfg.aheads, cfg.eunits, cfg.dlayers)
        self.ctc = CTC(cfg.odim, cfg.adim)
        self.sos = self.eos = cfg.odim - 1

    def encode(self, video: torch.Tensor, lengths: torch.Tensor, required: torch.Tensor):
        """video (B, T, 112, 112) normalised grey; lengths (B,); required (B,) padded lengths
        -> encoder output (B, T', adim), mask (B, 1, T')."""
        feats = self.visual_frontend(video[:, : int(lengths.max())].unsqueeze(1), lengths, required)
        mask = (torch.arange(feats.shape[1], device=feats.device)[None] < required[:, None].to(feats.device))
        return self.encoder(feats, mask[:, None]), mask[:, None]

    def teacher_forced_logits(self, video, lengths, required, targets: List[torch.Tensor]) -> torch.Tensor:
        """Logits (B, L+1, odim) for <sos> + target, i.e. predicting target + <eos>."""
        memory, memory_mask = self.encode(video, lengths, required)
        width = max(len(t) for t in targets) + 1
        tokens = torch.full((len(targets), width), self.eos, dtype=torch.long, device=memory.device)
        valid = torch.zeros(len(targets), width, dtype=torch.bool, device=memory.device)
        for i, t in enumerate(targets):
            tokens[i, 1:len(t) + 1] = t.to(memory.device)
            tokens[i, 0] = self.sos
            valid[i, :len(t) + 1] = True
        causal = torch.tril(torch.ones(width, width, dtype=torch.bool, device=memory.device))
        return self.decoder(tokens, valid[:, None, :] & causal[None], memory, memory_mask)


def load_conformer_lip_reader(path: str, device="cpu") -> ConformerLipReader:
    """The released observer-2 file (a state dict with espnet's keys)."""
    state = strip_prefixes(load_state_dict_file(path, what="conformer lip-reading checkpoint", mmap=True))
    try:
        cfg = ConformerConfig.from_state_dict(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model = ConformerLipReader(cfg)
    load_strict(model, state, source=path)
    return model.to(device).eval()


def text_to_indices(text: str) -> List[int]:
    """Characters of an LRS2 transcript -> indices; characters outside the 38 are dropped."""
    return [CHAR_TO_INDEX[c] for c in text.upper() if c in CHAR_TO_INDEX]


def required_length(target: Sequence[int]) -> int:
    """Shortest input CTC could align to ``target``: its length plus one per repeated neighbour."""
    return len(target) + sum(1 for a, b in zip(target, target[1:]) if a == b)


def _words(seq: Sequence[int], drop_empty: bool) -> List[Tuple[int, ...]]:
    words, current = [], []
    for i, c in enumerate(seq):
        if c == SPACE:
            words.append(tuple(current))
            current = []
        else:
            current.append(c)
    words.append(tuple(current))
    if drop_empty:                        # the original drops empty words after the first
        words = words[:1] + [w for w in words[1:] if w]
    return words


def _edit_distance(a: Sequence, b: Sequence) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def teacher_forced_error_rates(predicted: Sequence[int], target: Sequence[int]) -> Tuple[float, float]:
    """The original ``compute_both`` for one clip: the first len(target) argmax predictions (a
    final <eos> dropped) against the target -> (CER, WER) as edits / reference length."""
    pred = list(predicted[:len(target)])
    if pred and pred[-1] == EOS:
        pred = pred[:-1]
    cer = _edit_distance(pred, target) / len(target)
    ref_words = _words(target, drop_empty=False)
    wer = _edit_distance(_words(pred, drop_empty=True), ref_words) / len(ref_words)
    return cer, wer
