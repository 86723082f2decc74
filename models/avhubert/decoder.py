"""AV-HuBERT's seq2seq transformer decoder (fairseq TransformerDecoder layout), with a
key/value cache for step-by-step generation."""
import math
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.avhubert.config import DecoderConfig
from models.avhubert.modules import MultiheadAttention, activation


def sinusoidal_table(num_positions: int, dim: int, padding_idx: int) -> torch.Tensor:
    """fairseq's SinusoidalPositionalEmbedding table: (num_positions, dim), row padding_idx zero."""
    half = dim // 2
    rate = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float) * -rate)
    angles = torch.arange(num_positions, dtype=torch.float).unsqueeze(1) * freqs.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(num_positions, 1)], dim=1)
    table[padding_idx] = 0
    return table


def token_positions(tokens: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """fairseq's make_positions: non-pad tokens numbered from padding_idx + 1."""
    mask = tokens.ne(padding_idx).long()
    return torch.cumsum(mask, dim=1) * mask + padding_idx


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        dim = cfg.decoder_embed_dim
        self.self_attn = MultiheadAttention(dim, cfg.decoder_attention_heads, dropout=cfg.decoder_attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.encoder_attn = MultiheadAttention(dim, cfg.decoder_attention_heads, kdim=cfg.encoder_embed_dim,
                                               vdim=cfg.encoder_embed_dim, dropout=cfg.decoder_attention_dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.decoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.decoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.act = activation(cfg.activation_fn)
        self.normalize_before = cfg.decoder_normalize_before
        self.dropout, self.activation_dropout = cfg.decoder_dropout, cfg.decoder_activation_dropout

    def _block(self, x, norm, fn):
        residual = x
        if self.normalize_before:
            x = norm(x)
        x = residual + F.dropout(fn(x), self.dropout, self.training)
        return x if self.normalize_before else norm(x)

    def forward(self, x, enc, enc_padding_mask, cache: Optional[Dict[str, torch.Tensor]] = None):
        """x: (B, L, C) decoder states; enc: (B, S, C_enc). With ``cache`` x holds the newest step
        only and the cache keeps keys/values of earlier steps and of the encoder output."""
        def self_attention(h):
            if cache is None:
                return self.self_attn(h, h, h, causal=True)
            k, v = self.self_attn.project_kv(h, h)
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
            return self.self_attn(h, kv=(k, v))

        def cross_attention(h):
            if cache is None:
                return self.encoder_attn(h, enc, enc, key_padding_mask=enc_padding_mask)
            if "enc_k" not in cache:
                cache["enc_k"], cache["enc_v"] = self.encoder_attn.project_kv(enc, enc)
            return self.encoder_attn(h, kv=(cache["enc_k"], cache["enc_v"]), key_padding_mask=enc_padding_mask)

        def ffn(h):
            return self.fc2(F.dropout(self.act(self.fc1(h)), self.activation_dropout, self.training))

        x = self._block(x, self.self_attn_layer_norm, self_attention)
        x = self._block(x, self.encoder_attn_layer_norm, cross_attention)
        return self._block(x, self.final_layer_norm, ffn)


class TransformerDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.decoder_embed_dim
        self.padding_idx = cfg.padding_idx
        self.embed_tokens = nn.Embedding(cfg.vocab_size, dim, padding_idx=cfg.padding_idx)
        nn.init.normal_(self.embed_tokens.weight, mean=0, std=dim ** -0.5)
        with torch.no_grad():
            self.embed_tokens.weight[cfg.padding_idx].zero_()
        self.embed_scale = 1.0 if cfg.no_scale_embedding else math.sqrt(dim)
        self.embed_positions = None
        if not cfg.no_token_positional_embeddings and cfg.decoder_learned_pos:
            self.embed_positions = nn.Embedding(cfg.max_target_positions + cfg.padding_idx + 1, dim,
                                                padding_idx=cfg.padding_idx)
        self.sinusoidal = not cfg.no_token_positional_embeddings and not cfg.decoder_learned_pos
        self.register_buffer("position_table", sinusoidal_table(
            cfg.max_target_positions + cfg.padding_idx + 1, dim, cfg.padding_idx), persistent=False)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.layer_norm = nn.LayerNorm(dim) if cfg.decoder_normalize_before else None
        if not cfg.share_decoder_input_output_embed:
            self.embed_out = nn.Parameter(torch.randn(cfg.vocab_size, dim) * dim ** -0.5)

    def _positions(self, positions: torch.Tensor) -> Optional[torch.Tensor]:
        if self.embed_positions is not None:
            return self.embed_positions(positions)
        if not self.sinusoidal:
            return None
        if int(positions.max()) >= self.position_table.shape[0]:
            self.position_table = sinusoidal_table(int(positions.max()) + 1, self.cfg.decoder_embed_dim,
                                                   self.padding_idx).to(self.position_table.device)
        return self.position_table[positions]

    def output_layer(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.embed_tokens.weight if self.cfg.share_decoder_input_output_embed else self.embed_out
        return x @ weight.t()

    def forward(self, prev_output_tokens: torch.Tensor, enc: torch.Tensor,
                enc_padding_mask: Optional[torch.Tensor] = None,
                caches: Optional[List[Dict[str, torch.Tensor]]] = None) -> torch.Tensor:
        """prev_output_tokens (B, L) starting with </s>; enc (B, S, C) -> logits (B, L, V).
        With ``caches`` (one dict per layer) only the last token is decoded: logits (B, 1, V)."""
        positions = token_positions(prev_output_tokens, self.padding_idx)
        if caches is not None:
            prev_output_tokens, positions = prev_output_tokens[:, -1:], positions[:, -1:]
        x = self.embed_scale * self.embed_tokens(prev_output_tokens)
        pos = self._positions(positions)
        if pos is not None:
            x = x + pos.to(x.dtype)
        x = F.dropout(x, self.cfg.decoder_dropout, self.training)
        for index, layer in enumerate(self.layers):
            if self.training and self.cfg.decoder_layerdrop > 0 and torch.rand(()) < self.cfg.decoder_layerdrop:
                continue
            x = layer(x, enc, enc_padding_mask, None if caches is None else caches[index])
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.output_layer(x)
