"""AV-HuBERT models with the original parameter names.

- ``AVHubertModel``: the pretraining model minus its pretraining-only heads (what fairseq's
  ``remove_pretraining_modules`` leaves); keys as in a pretraining checkpoint.
- ``AVHubertEncoder``: the ``HubertEncoderWrapper`` around it (keys ``w2v_model.*``); it is the
  ``encoder`` of a seq2seq model and the ``audio_encoder`` of TalkLip.
- ``AVHubertSeq2Seq``: encoder + transformer decoder (keys ``encoder.w2v_model.*``, ``decoder.*``).

Inputs: audio (B, 104, T) stacked filterbanks at 25 Hz; video (B, 1, T, 88, 88) normalised grey
mouth crops; padding_mask (B, T) bool, True where padded. A missing modality is replaced by
zeros, as AV-HuBERT's ``extract_finetune`` does.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.avhubert.config import DecoderConfig, EncoderConfig
from models.avhubert.decoder import TransformerDecoder
from models.avhubert.modules import ResEncoder, SubModel, TransformerEncoder


class _GradMultiply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class AVHubertModel(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.encoder_embed_dim
        self.feature_extractor_audio = SubModel(cfg.audio_feat_dim, cfg)
        self.feature_extractor_video = SubModel(8 * cfg.resnet_width, cfg, resnet=ResEncoder(cfg.resnet_relu_type, cfg.resnet_width))
        if cfg.modality_fuse not in ("concat", "add"):
            raise ValueError(f"modality_fuse must be concat or add, got {cfg.modality_fuse!r}")
        fused = dim * 2 if cfg.modality_fuse == "concat" else dim
        self.post_extract_proj = nn.Linear(fused, dim) if fused != dim else None
        self.mask_emb = nn.Parameter(torch.rand(cfg.audio_feat_dim if cfg.masking_type == "input" else dim))
        self.encoder = TransformerEncoder(cfg)
        self.layer_norm = nn.LayerNorm(fused)
        if cfg.num_label_embs > 0:
            self.label_embs_concat = nn.Parameter(torch.rand(cfg.num_label_embs, cfg.final_dim or dim))

    @property
    def embed_dim(self) -> int:
        return self.cfg.encoder_embed_dim

    def _modality(self, extractor: nn.Module, source: torch.Tensor) -> torch.Tensor:
        scale = self.cfg.feature_grad_mult
        if scale <= 0:
            with torch.no_grad():
                return extractor(source)
        features = extractor(source)
        return _GradMultiply.apply(features, scale) if scale != 1.0 else features

    def extract_finetune(self, audio: Optional[torch.Tensor] = None, video: Optional[torch.Tensor] = None,
                         padding_mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """-> features (B, T, C), padding mask (B, T) or None."""
        if audio is None and video is None:
            raise ValueError("give audio, video or both")
        feats_audio = self._modality(self.feature_extractor_audio, audio) if audio is not None else None
        feats_video = self._modality(self.feature_extractor_video, video) if video is not None else None
        if feats_audio is None:
            feats_audio = feats_video.new_zeros(feats_video.shape[0], self.embed_dim, feats_video.shape[-1])
        if feats_video is None:
            feats_video = feats_audio.new_zeros(feats_audio.shape[0], self.embed_dim, feats_audio.shape[-1])
        if self.cfg.modality_fuse == "concat":
            features = torch.cat([feats_audio, feats_video], dim=1)
        else:
            features = feats_audio + feats_video
        features = self.layer_norm(features.transpose(1, 2))
        if padding_mask is not None:
            padding_mask = self._feature_padding(padding_mask, features.shape[1])
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        features = F.dropout(features, self.cfg.dropout_input, self.training)
        return self.encoder(features, padding_mask), padding_mask

    @staticmethod
    def _feature_padding(padding_mask: torch.Tensor, steps: int) -> torch.Tensor:
        extra = padding_mask.shape[1] % steps
        if extra:
            padding_mask = padding_mask[:, :-extra]
        return padding_mask.view(padding_mask.shape[0], steps, -1).all(-1)

    def extract_features(self, video=None, audio=None, padding_mask=None):
        """-> (features (T, B, C), padding mask (B, T)), as HubertEncoderWrapper returns them."""
        features, padding_mask = self.extract_finetune(audio, video, padding_mask)
        return features.transpose(0, 1), padding_mask


class AVHubertEncoder(nn.Module):
    """``HubertEncoderWrapper``: holds the model as ``w2v_model``; returns time-major features."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.w2v_model = AVHubertModel(cfg)

    @property
    def embed_dim(self) -> int:
        return self.w2v_model.embed_dim

    def forward(self, video=None, audio=None, padding_mask=None):
        return self.w2v_model.extract_features(video=video, audio=audio, padding_mask=padding_mask)

    extract_features = forward


class AVHubertSeq2Seq(nn.Module):
    """Lip reader: AV-HuBERT encoder + transformer decoder. ``codec`` (set by the loader when the
    checkpoint carries its task state) turns ids into text."""

    def __init__(self, encoder_cfg: EncoderConfig, decoder_cfg: DecoderConfig):
        super().__init__()
        self.encoder = AVHubertEncoder(encoder_cfg)
        self.decoder = TransformerDecoder(decoder_cfg)
        self.codec = None

    @property
    def eos(self) -> int:
        return 2

    def extract_features(self, video=None, audio=None, padding_mask=None):
        return self.encoder(video=video, audio=audio, padding_mask=padding_mask)

    def forward(self, video=None, audio=None, padding_mask=None, prev_output_tokens=None,
                return_encoder_out: bool = False):
        """-> logits (B, L, V) for ``prev_output_tokens`` (B, L); with ``return_encoder_out`` also
        the encoder output (T, B, C) and its padding mask."""
        enc, enc_mask = self.extract_features(video=video, audio=audio, padding_mask=padding_mask)
        logits = self.decoder(prev_output_tokens, enc.transpose(0, 1), enc_mask)
        return (logits, (enc, enc_mask)) if return_encoder_out else logits

    @torch.no_grad()
    def generate(self, video=None, audio=None, padding_mask=None, beam: int = 5, max_len_a: float = 1.0,
                 max_len_b: int = 0, lenpen: float = 1.0, min_len: int = 1) -> List[List[int]]:
        """Beam search as fairseq's SequenceGenerator (beam 1: greedy). -> ids per sample, no </s>."""
        from models.avhubert.generate import beam_search
        enc, enc_mask = self.extract_features(video=video, audio=audio, padding_mask=padding_mask)
        return beam_search(self.decoder, enc.transpose(0, 1), enc_mask, beam=beam, max_len_a=max_len_a,
                           max_len_b=max_len_b, lenpen=lenpen, min_len=min_len, eos=self.eos)

    def decode_text(self, ids: List[int]) -> str:
        if self.codec is None:
            raise ValueError("this model carries no dictionary/tokenizer; load a task state for it")
        return self.codec.decode(ids)


def freeze_all_but(model: nn.Module, encoder_layers=(), prefix: str = "") -> List[str]:
    """Freeze every parameter except those of the given transformer encoder layers
    (e.g. (9, 10, 11) as TalkLip fine-tunes); return the names left trainable."""
    wanted = tuple(f"{prefix}encoder.layers.{i}." for i in encoder_layers)
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad = any(w in f".{name}" or name.startswith(w) for w in wanted) if wanted else False
        if param.requires_grad:
            trainable.append(name)
    return trainable
