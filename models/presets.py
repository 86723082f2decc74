"""Every named model size in one registry.

AV-HuBERT (the lip-reading expert, and TalkLip's audio encoder), by ``encoder_preset(name)`` /
``decoder_preset(name)``:
- ``tiny``: a from-scratch expert for small corpora (the quickstart, tests); a narrow ResNet front end;
- ``base`` / ``large``: the released AV-HuBERT shapes;
- ``talklip_audio`` (encoder only): the BASE encoder inside the released TalkLip generators, with
  the 2004 label embeddings of its pretraining k-means dictionary (TalkLip's config.yaml w2v_args).

TalkLip's generator and discriminator, by ``talklip_preset(name)`` -> ``TalkLipConfig``:
- ``paper``: the released models (the default; the original checkpoints load into it);
- ``cpu``: every convolution 4x narrower (2.1M instead of 33.5M generator parameters, ~9x less
  compute per face), so a few minutes of CPU training learn a face of a small corpus.
The config is stored in the checkpoints train.py writes, so a file rebuilds its own model.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from models.avhubert.config import DecoderConfig, EncoderConfig

ENCODER_PRESETS: Dict[str, EncoderConfig] = {
    "tiny": EncoderConfig(encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128, encoder_attention_heads=4,
                          layer_norm_first=True, conv_pos=16, conv_pos_groups=4, dropout=0.1, resnet_width=8),
    "base": EncoderConfig(layer_norm_first=True),
    "large": EncoderConfig(encoder_layers=24, encoder_embed_dim=1024, encoder_ffn_embed_dim=4096,
                           encoder_attention_heads=16, layer_norm_first=True),
    "talklip_audio": EncoderConfig(
        layer_norm_first=True, masking_type="input", final_dim=256, feature_grad_mult=1.0, dropout=0.1,
        attention_dropout=0.1, activation_dropout=0.0, dropout_input=0.1, dropout_features=0.1,
        encoder_layerdrop=0.05, num_label_embs=2004),
}
DECODER_PRESETS: Dict[str, DecoderConfig] = {
    "tiny": DecoderConfig(decoder_embed_dim=64, decoder_ffn_embed_dim=128, decoder_layers=2, decoder_attention_heads=4,
                          decoder_normalize_before=True, share_decoder_input_output_embed=True, encoder_embed_dim=64),
    "base": DecoderConfig(decoder_normalize_before=True, share_decoder_input_output_embed=True),
    "large": DecoderConfig(decoder_embed_dim=1024, decoder_ffn_embed_dim=4096, decoder_layers=9,
                           decoder_attention_heads=8, decoder_normalize_before=True,
                           share_decoder_input_output_embed=True, encoder_embed_dim=1024),
}
EXPERT_PRESETS = tuple(DECODER_PRESETS)          # sizes a lip reader can be built at


@dataclass(frozen=True)
class TalkLipConfig:
    """Channel widths of TalkLip's convolutional networks (the audio encoder has its own
    ``EncoderConfig``). Block structure, and so every state-dict key, is the same at any width."""
    name: str = "paper"
    encoder_channels: Tuple[int, ...] = (16, 32, 64, 128, 256, 512, 512)    # face encoder, 96 -> 1 px
    decoder_channels: Tuple[int, ...] = (512, 512, 512, 384, 256, 128, 64)  # face decoder, 1 -> 96 px
    output_channels: int = 32                                               # the last 3x3 convolution
    disc_channels: Tuple[int, ...] = (32, 64, 128, 256, 512, 512, 512)      # discriminator blocks

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f, v in ((f, getattr(self, f.name)) for f in dataclasses.fields(self))}

    @classmethod
    def from_dict(cls, values: Optional[Mapping[str, Any]]) -> "TalkLipConfig":
        """From a checkpoint's stored dict; None (the released files store none) gives ``paper``."""
        if not values:
            return TALKLIP_PRESETS["paper"]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in names})


def _narrower(cfg: TalkLipConfig, name: str, divisor: int) -> TalkLipConfig:
    """Every width ``divisor`` times narrower except at the full 96-px resolution: the face encoder's
    first block keeps its width and the output block is halved only, since the skip connection there
    is all that carries the unmasked upper face to the output (at 4 channels it came out blurred);
    with it a training step costs ~7% more (quickstart: 746 vs 696 s for 700 steps)."""
    div = lambda chans: tuple(max(4, c // divisor) for c in chans)
    return TalkLipConfig(name, cfg.encoder_channels[:1] + div(cfg.encoder_channels[1:]), div(cfg.decoder_channels),
                         max(4, cfg.output_channels // 2), div(cfg.disc_channels))


TALKLIP_PRESETS: Dict[str, TalkLipConfig] = {"paper": TalkLipConfig()}
TALKLIP_PRESETS["cpu"] = _narrower(TALKLIP_PRESETS["paper"], "cpu", 4)


def _named(registry: Dict[str, Any], kind: str, name: str):
    if name not in registry:
        raise ValueError(f"unknown {kind} preset {name!r}: choose one of {', '.join(registry)}")
    return registry[name]


def encoder_preset(name: str, **overrides) -> EncoderConfig:
    return dataclasses.replace(_named(ENCODER_PRESETS, "AV-HuBERT encoder", name), **overrides)


def decoder_preset(name: str, **overrides) -> DecoderConfig:
    return dataclasses.replace(_named(DECODER_PRESETS, "AV-HuBERT decoder", name), **overrides)


def talklip_preset(name: str) -> TalkLipConfig:
    return _named(TALKLIP_PRESETS, "TalkLip", name)
