"""Build AV-HuBERT models from original fairseq checkpoint files (no fairseq needed).

``load_avhubert(path)`` reads a pretraining checkpoint (``_name: av_hubert``) or a seq2seq
fine-tuned one (``av_hubert_seq2seq``), builds the model from the configuration stored in the
file (``cfg``, or the legacy ``args`` namespace), maps the keys and loads them strictly.
"""
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from models.avhubert.config import DecoderConfig, EncoderConfig
from models.avhubert.fairseq_pickle import read_fairseq_file, to_plain
from models.avhubert.model import AVHubertModel, AVHubertSeq2Seq
from models.avhubert.tokenizer import TaskState
from utils.checkpoint import load_strict
from utils.errors import CheckpointError

# Keys of the original files that the native models do not hold, on purpose.
DROPPED_KEYS = (
    re.compile(r"(^|\.)final_proj\."),        # pretraining head, removed by remove_pretraining_modules
    re.compile(r"(^|\.)target_glu\."),        # idem
    re.compile(r"\._float_tensor$"),          # device marker of fairseq's sinusoidal positions
    re.compile(r"(^|\.)version$"),            # fairseq's state-dict version stamps
)


def map_fairseq_keys(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Original key -> native key. Dropped keys vanish; a fused ``in_proj_weight`` (old fairseq
    attention) is split into q/k/v; all other names are identical by construction."""
    out = {}
    for key, value in state.items():
        if any(p.search(key) for p in DROPPED_KEYS):
            continue
        if key.endswith(("in_proj_weight", "in_proj_bias")):
            base, kind = key.rsplit(".", 1)
            suffix = "weight" if kind.endswith("weight") else "bias"
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{base}.{name}.{suffix}"] = part
            continue
        out[key] = value
    return out


def fairseq_config(ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    """The stored configuration as plain dicts: {'model': {...}, 'task': {...}, ...}."""
    if ckpt.get("cfg") is not None:
        cfg = to_plain(ckpt["cfg"])
        if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
            return cfg
    if ckpt.get("args") is not None:
        args = to_plain(ckpt["args"])
        if isinstance(args, dict):
            model = dict(args)
            model.setdefault("_name", args.get("arch"))
            return {"model": model, "task": args}
    raise CheckpointError("the checkpoint stores no configuration ('cfg' or 'args')")


def _encoder_fields(w2v_args: Any) -> Dict[str, Any]:
    if isinstance(w2v_args, dict) and isinstance(w2v_args.get("model"), dict):
        return w2v_args["model"]
    if isinstance(w2v_args, dict):
        return w2v_args
    raise CheckpointError("the seq2seq checkpoint stores no w2v_args (its encoder configuration)")


def _label_rows(state: Mapping[str, torch.Tensor], prefix: str) -> Tuple[int, int]:
    emb = state.get(f"{prefix}label_embs_concat")
    return (int(emb.shape[0]), int(emb.shape[1])) if emb is not None else (0, 0)


def build_from_fairseq(cfg: Mapping[str, Any], state: Mapping[str, torch.Tensor]):
    """The native model a fairseq config describes (weights not loaded)."""
    model_cfg = cfg.get("model") or {}
    name = model_cfg.get("_name")
    if name == "av_hubert":
        rows, dim = _label_rows(state, "")
        enc = EncoderConfig.from_fairseq(model_cfg, num_label_embs=rows)
        if rows and dim != (enc.final_dim or enc.encoder_embed_dim):
            enc.final_dim = dim
        return AVHubertModel(enc)
    if name == "av_hubert_seq2seq":
        rows, dim = _label_rows(state, "encoder.w2v_model.")
        enc = EncoderConfig.from_fairseq(_encoder_fields(model_cfg.get("w2v_args")), num_label_embs=rows)
        if rows and dim != (enc.final_dim or enc.encoder_embed_dim):
            enc.final_dim = dim
        embed = state.get("decoder.embed_tokens.weight")
        if embed is None:
            raise CheckpointError("the seq2seq checkpoint has no decoder.embed_tokens.weight")
        dec = DecoderConfig.from_fairseq(model_cfg, vocab_size=int(embed.shape[0]),
                                         encoder_embed_dim=enc.encoder_embed_dim)
        return AVHubertSeq2Seq(enc, dec)
    raise CheckpointError(f"unsupported model type {name!r}: expected an AV-HuBERT pretraining "
                          f"(av_hubert) or seq2seq (av_hubert_seq2seq) checkpoint")


def load_avhubert(path: str, task_state_path: Optional[str] = None):
    """Load an original AV-HuBERT checkpoint into the native model, in eval mode.

    A seq2seq model gets ``.codec`` (dictionary + sentencepiece) from the checkpoint's task state,
    or from ``task_state_path`` (e.g. TalkLip's task_state.pt) when given.
    """
    ckpt = read_fairseq_file(path, what="AV-HuBERT checkpoint")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path} is not a fairseq checkpoint (no 'model' state dict): "
                              f"give an AV-HuBERT .pt file")
    state = ckpt["model"]
    try:
        model = build_from_fairseq(fairseq_config(ckpt), state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    load_strict(model, map_fairseq_keys(state), source=path)
    if isinstance(model, AVHubertSeq2Seq):
        source = task_state_path or (ckpt.get("task_state") if ckpt.get("task_state") else None)
        if source is not None:
            task = TaskState.load(source) if isinstance(source, str) else TaskState.from_pickled(source)
            if task.target_dictionary is not None and task.tokenizer is not None:
                model.codec = task.codec()
    return model.eval()


def load_lip_reader(path: str, fix: str) -> AVHubertSeq2Seq:
    """``load_avhubert`` for uses that decode text (the expert, a shipped reader): a seq2seq model with
    its dictionary, or one line that says so and ends with ``fix``."""
    model = load_avhubert(path)
    if not isinstance(model, AVHubertSeq2Seq) or model.codec is None:
        raise CheckpointError(f"{path} is not a seq2seq lip reader with its dictionary: {fix}")
    return model
