"""TalkLip generator, quality discriminator and audio-visual contrastive head.

State-dict keys are those of the released TalkLip checkpoints: ``face_encoder_blocks.*``,
``audio_encoder.w2v_model.*`` (AV-HuBERT BASE), ``audio_map.*``, ``face_decoder_blocks.*``,
``output_block.*``, ``sync_net.Linearaudio.*``; the discriminator's ``face_encoder_blocks.*`` and
``binary_pred.0.*``. Faces are BGR, as OpenCV decodes them and the released models were trained.
"""
import contextlib
import dataclasses
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.avhubert.config import EncoderConfig
from models.avhubert.model import AVHubertEncoder
from models.presets import TalkLipConfig, encoder_preset
from utils.checkpoint import load_checkpoint_file, load_strict, strip_prefixes
from utils.errors import CheckpointError
from utils.memory import drop_pages

FACE_SIZE = 96


class ConvBlock(nn.Module):
    """Conv (or transposed conv) + BatchNorm + ReLU, optionally residual (Wav2Lip's Conv2d)."""

    def __init__(self, cin, cout, kernel_size, stride, padding, residual=False, transpose=False,
                 output_padding=0):
        super().__init__()
        conv = (nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding) if transpose
                else nn.Conv2d(cin, cout, kernel_size, stride, padding))
        self.conv_block = nn.Sequential(conv, nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x):
        out = self.conv_block(x)
        return F.relu(out + x if self.residual else out)


class PlainConv(nn.Module):
    """Conv + LeakyReLU(0.01), no normalisation (the discriminator's blocks)."""

    def __init__(self, cin, cout, kernel_size, stride, padding):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding))

    def forward(self, x):
        return F.leaky_relu(self.conv_block(x), 0.01)


def _res(c, n):
    return [ConvBlock(c, c, 3, 1, 1, residual=True) for _ in range(n)]


class AVSync(nn.Module):
    """The ``av_sync`` contrastive head: audio projection + InfoNCE against visual features."""

    def __init__(self, dim: int = 768, temperature: float = 0.07, max_negatives: int = 100):
        super().__init__()
        self.Linearaudio = nn.Linear(dim, dim)
        self.temperature, self.max_negatives = temperature, max_negatives

    def forward(self, video: torch.Tensor, audio: torch.Tensor, generator: Optional[torch.Generator] = None):
        """video, audio: (N, C) paired features -> scalar loss; negatives are other rows' audio."""
        video = F.normalize(video, dim=1)
        audio = F.normalize(self.Linearaudio(F.normalize(audio, dim=1)), dim=1)
        n = audio.shape[0]
        n_neg = min(self.max_negatives, n // 2)
        if n_neg < 1:
            raise ValueError("the contrastive loss needs at least 2 frames")
        neg = torch.multinomial(torch.ones(n, n - 1), n_neg, generator=generator)
        neg = neg + (neg >= torch.arange(n)[:, None]).long()            # skip the positive itself
        # index_select, not audio[...]: its backward sums the repeated rows in a fixed order (indexing's
        # accumulates them in whatever order the threads finish, so reruns differed in stage 2)
        negatives = audio.index_select(0, neg.to(audio.device).view(-1)).view(n, n_neg, -1)
        logits = torch.cat([(audio * video).sum(-1, keepdim=True),
                            (audio[:, None] * negatives).sum(-1)], dim=1) / self.temperature
        return -F.log_softmax(logits, dim=1)[:, 0].mean()


class TalkLip(nn.Module):
    """The lip-sync generator.

    ``render(faces, audio_emb)``: faces (N, 6, 96, 96) in [0, 1] (masked target, reference),
    audio_emb (N, C) per-frame audio-encoder features -> (N, 3, 96, 96) in [0, 1].
    ``forward(faces, audio, padding_mask, audio_index)``: runs the audio encoder on (B, 104, T)
    features and picks row ``audio_index`` of the flattened (B*T, C) output for each face.
    Widths come from ``config`` (default: the paper's), the audio encoder from ``audio_encoder_cfg``
    (default: the released BASE encoder).
    """

    def __init__(self, audio_encoder_cfg: Optional[EncoderConfig] = None, config: Optional[TalkLipConfig] = None):
        super().__init__()
        cfg = audio_encoder_cfg or encoder_preset("talklip_audio")
        self.config = config or TalkLipConfig()
        e, d = (6,) + self.config.encoder_channels, self.config.decoder_channels
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(e[0], e[1], 7, 1, 3)),
            nn.Sequential(ConvBlock(e[1], e[2], 3, 2, 1), *_res(e[2], 2)),
            nn.Sequential(ConvBlock(e[2], e[3], 3, 2, 1), *_res(e[3], 3)),
            nn.Sequential(ConvBlock(e[3], e[4], 3, 2, 1), *_res(e[4], 2)),
            nn.Sequential(ConvBlock(e[4], e[5], 3, 2, 1), *_res(e[5], 2)),
            nn.Sequential(ConvBlock(e[5], e[6], 3, 2, 1), *_res(e[6], 1)),
            nn.Sequential(ConvBlock(e[6], e[7], 3, 1, 0), ConvBlock(e[7], e[7], 1, 1, 0))])
        self.audio_encoder = AVHubertEncoder(cfg)
        self.audio_map = nn.Linear(cfg.encoder_embed_dim, e[-1])
        up = [e[-i - 1] + d[i] for i in range(len(d))]
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(e[-1], d[0], 1, 1, 0)),
            nn.Sequential(ConvBlock(up[0], d[1], 3, 1, 0, transpose=True), *_res(d[1], 1)),
            *[nn.Sequential(ConvBlock(up[i - 1], d[i], 3, 2, 1, transpose=True, output_padding=1), *_res(d[i], 2))
              for i in range(2, 7)]])
        out = self.config.output_channels
        self.output_block = nn.Sequential(ConvBlock(up[6], out, 3, 1, 1), nn.Conv2d(out, 3, 1, 1, 0), nn.Sigmoid())
        self.sync_net = AVSync(cfg.encoder_embed_dim)

    @property
    def audio_dim(self) -> int:
        return self.audio_map.in_features

    def encode_audio(self, audio: torch.Tensor, padding_mask: Optional[torch.Tensor] = None,
                     train_encoder: bool = False):
        """audio (B, 104, T) -> per-frame features (T, B, C) and padding mask (B, T). Gradients reach
        the encoder's trainable layers only with ``train_encoder`` (training.trainer.StagePlan)."""
        with contextlib.nullcontext() if train_encoder else torch.no_grad():
            return self.audio_encoder(audio=audio, padding_mask=padding_mask)

    def render(self, faces: torch.Tensor, audio_emb: torch.Tensor) -> torch.Tensor:
        feats = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            feats.append(x)
        x = self.audio_map(audio_emb).view(audio_emb.shape[0], -1, 1, 1)
        for block in self.face_decoder_blocks:
            x = torch.cat([block(x), feats.pop()], dim=1)
        return self.output_block(x)

    def forward(self, faces: torch.Tensor, audio: torch.Tensor, padding_mask: Optional[torch.Tensor],
                audio_index: torch.Tensor, train_encoder: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> generated faces (N, 3, 96, 96), audio features (T, B, C)."""
        audio_emb, _ = self.encode_audio(audio, padding_mask, train_encoder)
        flat = audio_emb.transpose(0, 1).reshape(-1, audio_emb.shape[-1])
        return self.render(faces, flat.index_select(0, audio_index)), audio_emb


class TalkLipDiscriminator(nn.Module):
    """``TalkLip_disc_qual``: real/fake probability from the lower half of a face."""

    def __init__(self, config: Optional[TalkLipConfig] = None):
        super().__init__()
        self.config = config or TalkLipConfig()
        c = self.config.disc_channels
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(PlainConv(3, c[0], 7, 1, 3)),
            nn.Sequential(PlainConv(c[0], c[1], 5, (1, 2), 2), PlainConv(c[1], c[1], 5, 1, 2)),
            nn.Sequential(PlainConv(c[1], c[2], 5, 2, 2), PlainConv(c[2], c[2], 5, 1, 2)),
            nn.Sequential(PlainConv(c[2], c[3], 5, 2, 2), PlainConv(c[3], c[3], 5, 1, 2)),
            nn.Sequential(PlainConv(c[3], c[4], 3, 2, 1), PlainConv(c[4], c[4], 3, 1, 1)),
            nn.Sequential(PlainConv(c[4], c[5], 3, 2, 1), PlainConv(c[5], c[5], 3, 1, 1)),
            nn.Sequential(PlainConv(c[5], c[6], 3, 1, 0), PlainConv(c[6], c[6], 1, 1, 0))])
        self.binary_pred = nn.Sequential(nn.Conv2d(c[6], 1, 1, 1, 0), nn.Sigmoid())

    def init_for_training(self) -> "TalkLipDiscriminator":
        """He initialisation for LeakyReLU(0.01), zero biases: the signal keeps its scale through the 13
        convolutions. With PyTorch's default init it shrinks ~6x per layer, the output starts at 0.5
        for every input and the early layers' gradients fall below Adam's epsilon, so a freshly
        trained discriminator can stay at chance for good (used for new training runs; loaded
        checkpoints bring their own weights)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, a=0.01, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)
        return self

    def forward(self, faces: torch.Tensor, logits: bool = False) -> torch.Tensor:
        """faces (N, 3, 96, 96) in [0, 1] -> (N, 1) probability of being real (``logits``: before
        the sigmoid, what the losses take)."""
        x = faces[:, :, faces.shape[2] // 2:]
        for block in self.face_encoder_blocks:
            x = block(x)
        x = self.binary_pred[0](x).view(len(x), -1)
        return x if logits else self.binary_pred[1](x)

    def perceptual_loss(self, fake_faces: torch.Tensor) -> torch.Tensor:
        """BCE pushing generated faces towards 'real' (the generator's perceptual loss)."""
        return bce(self(fake_faces, logits=True), 1.0)


def bce(logits: torch.Tensor, value: float) -> torch.Tensor:
    """Binary cross-entropy of sigmoid(logits) against a constant label, in float32 outside autocast.

    The original applied BCE to the sigmoid's output; that equals this wherever the probability
    is not rounded to exactly 0 or 1, but there its loss sticks at 100 with a zero gradient (the
    discriminator "collapse" of a saturated start). On logits the gradient never vanishes."""
    with torch.autocast(logits.device.type, enabled=False):
        logits = logits.float()
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, value))


TalkLip_disc_qual = TalkLipDiscriminator   # the original name


def _checkpoint_state(path_or_state, what: str) -> Tuple[dict, str, dict]:
    if isinstance(path_or_state, str):
        state, meta = load_checkpoint_file(path_or_state, what=what, mmap=True)
        return strip_prefixes(state), path_or_state, meta
    return strip_prefixes(path_or_state), what, {}


def to_channels_last(module: nn.Module) -> nn.Module:
    """Store every 4-D weight channels-last (NHWC), the layout oneDNN's and cuDNN's fastest convolutions
    use (a train step of the cpu preset on 2 CPU cores: -21% time); values are unchanged."""
    for param in module.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
    return module


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every ConvBlock's BatchNorm (its running statistics) into the convolution before it, in
    place: conv weight x gamma/sqrt(var + eps) per output channel, bias (b - mean) x that + beta.
    Inference only (the model must be in eval mode); outputs equal the unfolded model's up to float
    rounding."""
    if model.training:
        raise RuntimeError("fold_batchnorm needs a model in eval mode")
    for block in model.modules():
        if not (isinstance(block, ConvBlock) and isinstance(block.conv_block[1], nn.BatchNorm2d)):
            continue
        conv, norm = block.conv_block
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        # Conv2d weights are (out, in, k, k); ConvTranspose2d weights (in, out, k, k)
        shape = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        conv.weight = nn.Parameter(conv.weight * scale.view(shape), requires_grad=False)
        conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias, requires_grad=False)
        block.conv_block[1] = nn.Identity()
    return model


def prepare_for_inference(model: TalkLip, dtype: Optional[torch.dtype] = None) -> TalkLip:
    """Batch norm folded and weights channels-last (in place, once): the form inf_demo.py and
    inf_test.py run (bench/dub.py measures it against the unfolded model). Not for training.
    Pages of a mapped checkpoint file are handed back (``utils.memory.drop_pages``): the folded
    weights are copies, and the rest (the audio encoder) is read again from the file when used.
    With ``dtype`` bf16 the face networks' weights are stored in bf16 (``weights_dtype``): what
    autocast would cast them to at every call, once (the same output, bit for bit; half their memory,
    and no 70 MB cast per batch); the audio encoder stays fp32 (autocast runs it in bf16)."""
    if not getattr(model, "inference_ready", False):
        to_channels_last(fold_batchnorm(model.eval()))
        model.inference_ready = True
        model.weights_dtype = torch.float32
        # the checkpoint's own conv weights were read (paged in) to fold them and are used no more:
        # hand their pages back (a mapped checkpoint only; utils.memory)
        drop_pages(model.parameters(), whole_mappings=True)
    if dtype is torch.bfloat16 and model.weights_dtype is not torch.bfloat16:
        for name, child in model.named_children():
            if name != "audio_encoder":
                child.to(torch.bfloat16)
        model.weights_dtype = torch.bfloat16
    return model


def load_talklip(path_or_state: Union[str, dict], device="cpu") -> TalkLip:
    """A TalkLip generator from an original .pth (dict with ``state_dict``) or a state dict. The
    model is the paper's with the released BASE audio encoder, unless the file records otherwise
    (``talklip_cfg`` and ``audio_encoder_cfg``, written by train.py)."""
    state, source, meta = _checkpoint_state(path_or_state, "TalkLip checkpoint")
    labels = state.get("audio_encoder.w2v_model.label_embs_concat")
    cfg = encoder_preset("talklip_audio", **(meta.get("audio_encoder_cfg") or {}))
    cfg = dataclasses.replace(cfg, num_label_embs=int(labels.shape[0]) if labels is not None else 0,
                              final_dim=int(labels.shape[1]) if labels is not None else 256)
    if "binary_pred.0.weight" in state:
        raise CheckpointError(f"{source} is a TalkLip discriminator checkpoint: pass the generator "
                              f"checkpoint (the file without the disc_ prefix)")
    with torch.device("meta"):                 # no random init; the checkpoint's tensors are used
        model = TalkLip(cfg, TalkLipConfig.from_dict(meta.get("talklip_cfg")))
    load_strict(model, state, source=source, assign=True)
    model = model.to(device).eval()
    # how the training crops framed the face against the detector's box (face_detection.framing; train.py records it
    # when its boxes carried one; the dub checks and uses it). None: the detector's box as found (the original's)
    model.face_framing = meta.get("face_framing")
    return model


def load_discriminator(path_or_state: Union[str, dict], device="cpu") -> TalkLipDiscriminator:
    state, source, meta = _checkpoint_state(path_or_state, "TalkLip discriminator checkpoint")
    with torch.device("meta"):
        model = TalkLipDiscriminator(TalkLipConfig.from_dict(meta.get("talklip_cfg")))
    load_strict(model, state, source=source, assign=True)
    return model.to(device).eval()
