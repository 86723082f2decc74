"""Building blocks of AV-HuBERT with fairseq's parameter names. Tensors are batch-first:
x: (batch, time, channels); padding masks: (batch, time) bool, True where padded."""
import math
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

KVCache = Tuple[torch.Tensor, torch.Tensor]


def activation(name: str):
    table = {"gelu": F.gelu, "relu": F.relu, "gelu_accurate": lambda x: F.gelu(x, approximate="tanh"),
             "tanh": torch.tanh, "linear": lambda x: x}
    if name not in table:
        raise ValueError(f"unsupported activation {name!r}")
    return table[name]


class MultiheadAttention(nn.Module):
    """fairseq's MultiheadAttention (q/k/v/out projections) computed with SDPA."""

    def __init__(self, embed_dim: int, num_heads: int, kdim: Optional[int] = None,
                 vdim: Optional[int] = None, dropout: float = 0.0):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.dropout = dropout
        self.k_proj = nn.Linear(kdim or embed_dim, embed_dim)
        self.v_proj = nn.Linear(vdim or embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:          # (B, T, C) -> (B, H, T, d)
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, key: torch.Tensor, value: torch.Tensor) -> KVCache:
        return self._heads(self.k_proj(key)), self._heads(self.v_proj(value))

    def forward(self, query: torch.Tensor, key: Optional[torch.Tensor] = None,
                value: Optional[torch.Tensor] = None, key_padding_mask: Optional[torch.Tensor] = None,
                causal: bool = False, kv: Optional[KVCache] = None) -> torch.Tensor:
        """query (B, T, C); key/value (B, S, C) or precomputed ``kv`` (B, H, S, d) each;
        key_padding_mask (B, S) True = ignore; causal masks future positions (T == S)."""
        q = self._heads(self.q_proj(query))
        k, v = kv if kv is not None else self.project_kv(key, value)
        mask = None
        if key_padding_mask is not None:
            mask = ~key_padding_mask[:, None, None, :]          # True = attend
            if causal:
                mask = mask & torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
                causal = False
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                             dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(query.shape[0], query.shape[1], self.embed_dim)
        return self.out_proj(out)


class EncoderLayer(nn.Module):
    """wav2vec2's TransformerSentenceEncoderLayer (post-norm, or pre-norm with layer_norm_first)."""

    def __init__(self, dim: int, ffn_dim: int, heads: int, dropout: float, attention_dropout: float,
                 activation_dropout: float, activation_fn: str, layer_norm_first: bool):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads, dropout=attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.act = activation(activation_fn)
        self.layer_norm_first = layer_norm_first
        self.dropout, self.activation_dropout = dropout, activation_dropout

    def _ffn(self, x):
        x = F.dropout(self.act(self.fc1(x)), self.activation_dropout, self.training)
        return F.dropout(self.fc2(x), self.dropout, self.training)

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.layer_norm_first:
            h = self.self_attn_layer_norm(x)
            x = x + F.dropout(self.self_attn(h, h, h, key_padding_mask=padding_mask), self.dropout, self.training)
            return x + self._ffn(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x + F.dropout(self.self_attn(x, x, x, key_padding_mask=padding_mask),
                                                    self.dropout, self.training))
        return self.final_layer_norm(x + self._ffn(x))


class WeightNormConv1d(nn.Module):
    """Conv1d with weight normalisation over the kernel axis (keys weight_g, weight_v, bias),
    as ``torch.nn.utils.weight_norm(conv, dim=2)`` stores it in fairseq checkpoints."""

    def __init__(self, channels: int, kernel_size: int, groups: int):
        super().__init__()
        self.padding, self.groups = kernel_size // 2, groups
        std = math.sqrt(4.0 / (kernel_size * channels))
        shape = (channels, channels // groups, kernel_size)
        if torch.empty(0).is_meta:
            # built on the meta device to take a checkpoint's tensors: no values, and no arithmetic
            # (the first arithmetic on meta tensors loads torch's meta kernels: +69 MB resident)
            weight_v, weight_g = torch.empty(shape), torch.empty(1, 1, kernel_size)
        else:
            weight_v = torch.randn(shape) * std
            weight_g = weight_v.norm(dim=(0, 1), keepdim=True)
        self.weight_g = nn.Parameter(weight_g)
        self.weight_v = nn.Parameter(weight_v)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class TransformerEncoder(nn.Module):
    """wav2vec2's TransformerEncoder: convolutional relative positions, then the layers."""

    def __init__(self, cfg, num_layers: Optional[int] = None):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.pos_conv = nn.Sequential(WeightNormConv1d(dim, cfg.conv_pos, cfg.conv_pos_groups))
        self.conv_pos = cfg.conv_pos
        self.layers = nn.ModuleList(
            EncoderLayer(dim, cfg.encoder_ffn_embed_dim, cfg.encoder_attention_heads, cfg.dropout,
                         cfg.attention_dropout, cfg.activation_dropout, cfg.activation_fn, cfg.layer_norm_first)
            for _ in range(cfg.encoder_layers if num_layers is None else num_layers))
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = cfg.layer_norm_first
        self.dropout, self.layerdrop = cfg.dropout, cfg.encoder_layerdrop

    def forward(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        pos = self.pos_conv(x.transpose(1, 2))
        if self.conv_pos % 2 == 0:           # fairseq's SamePad drops the extra last step
            pos = pos[..., :-1]
        x = x + F.gelu(pos).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = F.dropout(x, self.dropout, self.training)
        for layer in self.layers:
            if self.training and self.layerdrop > 0 and np.random.random() < self.layerdrop:
                continue
            x = layer(x, padding_mask)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, relu_type: str):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.PReLU(planes) if relu_type == "prelu" else nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.PReLU(planes) if relu_type == "prelu" else nn.ReLU()
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + (x if self.downsample is None else self.downsample(x)))


class ResNetTrunk(nn.Module):
    """ResNet-18 body (layer1..layer4) and global average pooling."""

    def __init__(self, relu_type: str, width: int = 64):
        super().__init__()
        planes = [width, 2 * width, 4 * width, 8 * width]
        inplanes = width
        for index, width in enumerate(planes):
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(inplanes, width, stride, relu_type), BasicBlock(width, width, 1, relu_type)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            inplanes = width

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


class ResEncoder(nn.Module):
    """Visual front end: 3-D conv stem + ResNet-18 per frame. (B, 1, T, H, W) -> (B, 8*width, T).
    ``width`` 64 is the released models'; smaller widths make cheap experts for small corpora."""

    def __init__(self, relu_type: str = "prelu", width: int = 64):
        super().__init__()
        self.out_dim = 8 * width
        self.frontend3D = nn.Sequential(
            nn.Conv3d(1, width, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.PReLU(width) if relu_type == "prelu" else nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
        self.trunk = ResNetTrunk(relu_type, width)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        batch = video.shape[0]
        x = self.frontend3D(video)                                  # (B, width, T, h, w)
        steps = x.shape[2]
        x = x.transpose(1, 2).reshape(batch * steps, *x.shape[1:2], *x.shape[3:])
        return self.trunk(x).view(batch, steps, -1).transpose(1, 2)


class SubModel(nn.Module):
    """One modality's feature extractor: optional ResNet, linear projection, optional encoder."""

    def __init__(self, input_dim: int, cfg, resnet: Optional[nn.Module] = None):
        super().__init__()
        self.resnet = resnet
        self.proj = nn.Linear(input_dim, cfg.encoder_embed_dim)
        self.encoder = TransformerEncoder(cfg, cfg.sub_encoder_layers) if cfg.sub_encoder_layers > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, F, T) features or (B, 1, T, H, W) video -> (B, C, T)."""
        if self.resnet is not None:
            x = self.resnet(x)
        x = self.proj(x.transpose(1, 2))
        if self.encoder is not None:
            x = self.encoder(x)
        return x.transpose(1, 2)
