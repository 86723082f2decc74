"""Write checkpoints in fairseq's on-disk format for loader tests, without fairseq or omegaconf.

Classes stand in for omegaconf's DictConfig/ListConfig/nodes/metadata and fairseq's Dictionary,
SentencepieceBPE and choice enums; while saving they are registered under the original module
names, so the pickle names the same globals and holds the same state layout (``_content``,
``_metadata``, ``_parent``, ``_val``) as a real fairseq checkpoint. They are unregistered after
saving, so the loader under test cannot lean on them.
"""
import contextlib
import enum
import io
import sys
import types
import typing
from dataclasses import dataclass, field

import torch


class DictConfig:
    pass


class ListConfig:
    pass


class AnyNode:
    pass


class StringNode:
    pass


class IntegerNode:
    pass


class FloatNode:
    pass


class BooleanNode:
    pass


@dataclass
class Metadata:
    ref_type: typing.Any = None
    object_type: typing.Any = None
    optional: bool = True
    key: typing.Any = None
    flags: dict = field(default_factory=dict)


@dataclass
class ContainerMetadata(Metadata):
    key_type: typing.Any = None
    element_type: typing.Any = None


class Dictionary:
    pass


class SentencepieceBPE:
    pass


class DDP_BACKEND_CHOICES(enum.Enum):
    c10d = "c10d"
    no_c10d = "no_c10d"


FAKE_MODULES = {
    "omegaconf": {}, "omegaconf.dictconfig": {"DictConfig": DictConfig},
    "omegaconf.listconfig": {"ListConfig": ListConfig},
    "omegaconf.nodes": {"AnyNode": AnyNode, "StringNode": StringNode, "IntegerNode": IntegerNode,
                        "FloatNode": FloatNode, "BooleanNode": BooleanNode},
    "omegaconf.base": {"Metadata": Metadata, "ContainerMetadata": ContainerMetadata},
    "fairseq": {}, "fairseq.data": {}, "fairseq.data.dictionary": {"Dictionary": Dictionary},
    "fairseq.data.encoders": {}, "fairseq.data.encoders.sentencepiece_bpe": {"SentencepieceBPE": SentencepieceBPE},
    "fairseq.dataclass": {}, "fairseq.dataclass.constants": {"DDP_BACKEND_CHOICES": DDP_BACKEND_CHOICES},
}


@contextlib.contextmanager
def fake_fairseq_modules():
    saved = {name: sys.modules.get(name) for name in FAKE_MODULES}
    for name, members in FAKE_MODULES.items():
        module = types.ModuleType(name)
        for attr, obj in members.items():
            setattr(module, attr, obj)
            obj.__module__, obj.__qualname__ = name, attr
        sys.modules[name] = module
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def to_omegaconf(value, parent=None, key=None):
    """Plain data -> objects laid out as omegaconf 2.0 pickles them."""
    if isinstance(value, dict):
        node = DictConfig()
        node.__dict__.update(_metadata=ContainerMetadata(typing.Any, dict, True, key, {}, typing.Any, typing.Any),
                             _parent=parent, _content=None)
        node._content = {k: to_omegaconf(v, node, k) for k, v in value.items()}
        return node
    if isinstance(value, list):
        node = ListConfig()
        node.__dict__.update(_metadata=ContainerMetadata(typing.Any, list, True, key, {}, int, typing.Any),
                             _parent=parent, _content=None)
        node._content = [to_omegaconf(v, node, i) for i, v in enumerate(value)]
        return node
    kind = {bool: BooleanNode, int: IntegerNode, float: FloatNode, str: StringNode}.get(type(value), AnyNode)
    node = kind()
    ref = typing.Optional[int] if kind is IntegerNode else typing.Any
    node.__dict__.update(_val=value, _metadata=Metadata(ref, None, True, key, {}), _parent=parent)
    return node


def fairseq_dictionary(symbols):
    d = Dictionary()
    d.__dict__.update(bos_word="<s>", unk_word="<unk>", pad_word="<pad>", eos_word="</s>",
                      symbols=list(symbols), count=[1] * len(symbols),
                      indices={s: i for i, s in enumerate(symbols)},
                      bos_index=0, pad_index=1, eos_index=2, unk_index=3, nspecial=4)
    return d


def train_sentencepiece(lines, vocab_size=40):
    """A small unigram sentencepiece model: (processor, serialized proto)."""
    import sentencepiece as spm
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
                                   model_type="unigram", hard_vocab_limit=False, minloglevel=2)
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    return processor, model.getvalue()


def save_fairseq_checkpoint(path, cfg=None, args=None, model_state=None, task_state=None,
                            extra=None):
    """torch.save a dict shaped like fairseq's checkpoint_utils.save_state."""
    with fake_fairseq_modules():
        payload = {
            "args": args,
            "cfg": to_omegaconf(cfg) if cfg is not None else None,
            "model": model_state,
            "criterion": {},
            "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion",
                                   "optimizer_name": "FairseqAdam", "lr_scheduler_state": {"best": 0.5},
                                   "num_updates": 1234}],
            "task_state": task_state or {},
            "extra_state": {"epoch": 3, "train_iterator": {"epoch": 3}, "ddp": DDP_BACKEND_CHOICES.no_c10d},
            "last_optimizer_state": None,
        }
        payload.update(extra or {})
        torch.save(payload, path)


def task_state_objects(symbols, sp_processor):
    """The task state AV-HuBERT pickles: label dictionaries, target dictionary, tokenizer."""
    with fake_fairseq_modules():
        bpe = SentencepieceBPE()
        bpe.__dict__["sp"] = sp_processor
        return {"dictionaries": [fairseq_dictionary(["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(10)])],
                "target_dictionary": fairseq_dictionary(symbols), "s2s_tokenizer": bpe}
