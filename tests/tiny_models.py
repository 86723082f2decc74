"""Tiny models in the original file formats, shared by the tests."""
import random

import torch

from models.avhubert import AVHubertSeq2Seq, DecoderConfig, EncoderConfig
from preparation.make_synthetic import WORDS
from tests.fairseq_format import save_fairseq_checkpoint, task_state_objects, train_sentencepiece

TINY_ENCODER = {"_name": "av_hubert", "label_rate": 25, "encoder_layers": 2, "encoder_embed_dim": 32,
                "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 4, "layer_norm_first": True,
                "conv_pos": 8, "conv_pos_groups": 4, "audio_feat_dim": 104, "final_dim": 16,
                "untie_final_proj": True, "modality_fuse": "concat", "masking_type": "input",
                "extractor_mode": "default", "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4",
                "dropout": 0.1, "attention_dropout": 0.1, "feature_grad_mult": 0.1, "mask_prob_image": 0.3,
                "resnet_weights": None, "selection_type": "same_seq"}
TINY_DECODER = {"decoder_embed_dim": 32, "decoder_ffn_embed_dim": 64, "decoder_layers": 2,
                "decoder_attention_heads": 4, "decoder_normalize_before": True, "decoder_learned_pos": False,
                "share_decoder_input_output_embed": True, "no_scale_embedding": True,
                "max_target_positions": 2048, "decoder_dropout": 0.1}


def fp16_exact(module):
    """Round every float parameter to a value fp16 represents, so a half-precision file is exact."""
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return module


def randomise(module, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and "running_var" not in name:
                tensor.copy_(torch.randn_like(tensor) * 0.2)
    return fp16_exact(module)


def make_codec_parts():
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS).lower() for _ in range(6)) for _ in range(300)]
    processor, _ = train_sentencepiece(lines, vocab_size=40)
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [p for p in pieces if p not in ("<unk>", "<s>", "</s>")]
    return processor, symbols


def write_seq2seq_checkpoint(path, codec_parts, seed=0):
    """A tiny lip reader saved as fairseq saves av_hubert_seq2seq, and the same model in memory."""
    processor, symbols = codec_parts
    reference = randomise(AVHubertSeq2Seq(EncoderConfig.from_fairseq(TINY_ENCODER, num_label_embs=14),
                                          DecoderConfig(vocab_size=len(symbols), encoder_embed_dim=32,
                                                        **{k: v for k, v in TINY_DECODER.items()})), seed).eval()
    state = {k: (v.half() if i % 2 and v.is_floating_point() else v)
             for i, (k, v) in enumerate(reference.state_dict().items())}
    state["decoder.embed_positions._float_tensor"] = torch.zeros(1)
    cfg = {"_name": None, "common": {"fp16": True, "seed": 1337},
           "task": {"_name": "av_hubert_pretraining", "modalities": ["video"], "labels": ["wrd"],
                    "normalize": True, "is_s2s": True, "data": "???"},
           "model": {"_name": "av_hubert_seq2seq", "w2v_path": "/private/base.pt", "apply_mask": False,
                     "layerdrop": 0.1, "freeze_finetune_updates": 100, "normalize": True, "data": "${task.data}",
                     "w2v_args": {"common": {"fp16": True}, "model": TINY_ENCODER,
                                  "task": {"_name": "av_hubert_pretraining", "labels": ["km"]}},
                     **TINY_DECODER},
           "criterion": {"_name": "label_smoothed_cross_entropy", "label_smoothing": 0.1}}
    save_fairseq_checkpoint(path, cfg=cfg, model_state=state, task_state=task_state_objects(symbols, processor))
    return path, reference


