"""AV-HuBERT configurations: the fields the modules need, read from fairseq's stored config.

``EncoderConfig`` mirrors ``AVHubertConfig`` (the pretraining model, also the encoder inside
fine-tuned models and TalkLip); ``DecoderConfig`` mirrors ``AVHubertSeq2SeqConfig``'s decoder.
Unknown fields in a stored config are ignored; missing ones take fairseq's defaults.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


def _from_mapping(cls, values: Mapping[str, Any], **overrides):
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in (values or {}).items() if k in names and v is not None
              and not (isinstance(v, str) and v.startswith(("???", "${")))}
    kwargs.update(overrides)
    return cls(**kwargs)


@dataclass
class EncoderConfig:
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    audio_feat_dim: int = 104
    modality_fuse: str = "concat"
    resnet_relu_type: str = "prelu"
    resnet_width: int = 64        # talklip extension: 64 in every released model
    sub_encoder_layers: int = 0
    masking_type: str = "input"
    final_dim: int = 0
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    dropout_features: float = 0.0
    feature_grad_mult: float = 1.0
    num_label_embs: int = 0       # rows of label_embs_concat (sum of pretraining label classes)

    @classmethod
    def from_fairseq(cls, model_cfg: Mapping[str, Any], **overrides) -> "EncoderConfig":
        return _from_mapping(cls, model_cfg, **overrides)


@dataclass
class DecoderConfig:
    vocab_size: int = 1000
    padding_idx: int = 1
    decoder_embed_dim: int = 768
    decoder_ffn_embed_dim: int = 3072
    decoder_layers: int = 6
    decoder_attention_heads: int = 4
    decoder_learned_pos: bool = False
    decoder_normalize_before: bool = False
    no_token_positional_embeddings: bool = False
    max_target_positions: int = 2048
    share_decoder_input_output_embed: bool = False
    no_scale_embedding: bool = True
    decoder_dropout: float = 0.0
    decoder_attention_dropout: float = 0.0
    decoder_activation_dropout: float = 0.0
    decoder_layerdrop: float = 0.0
    activation_fn: str = "relu"    # fairseq's TransformerDecoderLayer default; AV-HuBERT sets none
    encoder_embed_dim: int = 768   # width of the encoder output the cross-attention reads

    @classmethod
    def from_fairseq(cls, model_cfg: Mapping[str, Any], **overrides) -> "DecoderConfig":
        values = {k: v for k, v in (model_cfg or {}).items() if k not in ("activation_fn", "encoder_embed_dim")}
        return _from_mapping(cls, values, **overrides)

