"""Read fairseq checkpoint files without fairseq, omegaconf or sentencepiece objects being built.

A fairseq ``.pt`` file is a torch pickle that holds, next to the tensors, configuration objects
(omegaconf ``DictConfig`` or an ``argparse.Namespace``), task state (``Dictionary``,
``SentencepieceBPE``) and optimizer history. The unpickler here allows torch's own safe globals,
plain builtin types and a few numpy reconstructors; classes from fairseq, omegaconf, hydra, typing
and sentencepiece become inert records of their pickled state; every other global is refused,
so a checkpoint cannot run code. :func:`to_plain` then turns the records into dicts and lists.
"""
import _compat_pickle
import argparse
import collections
import os
import pickle
import types
from typing import Any

import torch

from utils.errors import CheckpointError

# Modules whose classes are rebuilt as inert records (their state is kept, no code runs).
RECORD_MODULE_PREFIXES = ("omegaconf", "fairseq", "hydra", "typing", "avhubert", "hubert",
                          "hubert_pretraining", "hubert_asr", "sentencepiece", "enum", "pathlib")
SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bool", "bytes",
                 "bytearray", "complex", "slice", "range", "object", "NoneType"}
SAFE_NUMPY = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
              ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
              ("numpy", "dtype"), ("numpy", "ndarray")}


class PickledRecord:
    """Stands in for a class that is not imported: keeps what the pickle gave it, nothing more."""

    pickled_module = ""
    pickled_name = ""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<record {self.pickled_module}.{self.pickled_name}>"


_record_classes = {}


def record_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _record_classes:
        _record_classes[key] = type(name, (PickledRecord,), {"pickled_module": module, "pickled_name": name})
    return _record_classes[key]


def _record_getitem(container, item):      # typing generics pickle as operator.getitem(origin, args)
    return record_class("typing", "Annotation")(container, item)


def _type_of_none(*args):                   # NoneType pickles as builtins.type(None)
    if args != (None,):
        raise pickle.UnpicklingError("refusing builtins.type with arguments other than None")
    return type(None)


def _safe_reconstructor(cls, base, state):  # protocol 0/1 objects: only records or plain types
    if not (isinstance(cls, type) and issubclass(cls, PickledRecord)) and cls is not argparse.Namespace:
        raise pickle.UnpicklingError(f"refusing to rebuild {cls!r}")
    obj = object.__new__(cls)
    if isinstance(obj, PickledRecord):
        obj.args, obj.kwargs, obj.state = (), {}, None
    return obj


class RestrictedUnpickler(pickle.Unpickler):
    _torch_allowed = None

    def find_class(self, module: str, name: str):
        if (module, name) in _compat_pickle.NAME_MAPPING:      # protocol 2 writes Python 2 names
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if RestrictedUnpickler._torch_allowed is None:
            from torch import _weights_only_unpickler
            RestrictedUnpickler._torch_allowed = _weights_only_unpickler._get_allowed_globals()
        full = f"{module}.{name}"
        if full in self._torch_allowed:
            return self._torch_allowed[full]
        if module.startswith("torch") and (name.endswith("Storage") or name in ("Size", "device")):
            return super().find_class(module, name)
        if module == "builtins" and name in SAFE_BUILTINS:
            return type(None) if name == "NoneType" else getattr(__import__("builtins"), name)
        if module == "builtins" and name == "type":
            return _type_of_none
        if module == "collections" and name in ("OrderedDict", "defaultdict", "Counter"):
            return getattr(collections, name)
        if (module, name) in SAFE_NUMPY:
            return super().find_class(module, name)
        if module == "argparse" and name == "Namespace":
            return argparse.Namespace
        if module == "copyreg" and name == "_reconstructor":
            return _safe_reconstructor
        if module in ("operator", "_operator") and name == "getitem":
            return _record_getitem
        if module.split(".")[0] in RECORD_MODULE_PREFIXES:
            return record_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {full}")


restricted_pickle = types.ModuleType("talklip_restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()
restricted_pickle.loads = lambda data, **kw: RestrictedUnpickler(__import__("io").BytesIO(data), **kw).load()


def read_fairseq_file(path: str, what: str = "fairseq checkpoint") -> Any:
    """Unpickle a fairseq/torch file safely on CPU; raise CheckpointError on anything else."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} {path} does not exist: check the path")
    try:
        return torch.load(path, map_location="cpu", pickle_module=restricted_pickle, weights_only=False)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"refusing to load {what} {path}: {exc}; only checkpoint data "
                              f"(tensors, configs, dictionaries) is accepted") from None
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read {what} {path} ({reason[:200]}): is the file complete?") from None


def _record_kind(obj: PickledRecord) -> str:
    return f"{obj.pickled_module}.{obj.pickled_name}"


def to_plain(obj: Any, _depth: int = 0) -> Any:
    """Configs as plain data: DictConfig -> dict, ListConfig -> list, nodes -> values,
    Namespace -> dict, enum members -> their value. Tensors and other records pass through."""
    if _depth > 100:
        raise CheckpointError("configuration nested too deeply to be a fairseq config")
    if isinstance(obj, PickledRecord):
        kind = _record_kind(obj)
        state = obj.state if isinstance(obj.state, dict) else {}
        if kind.startswith("omegaconf.") and kind.endswith(("DictConfig", "ListConfig")):
            return to_plain(state.get("_content"), _depth + 1)
        if kind.startswith("omegaconf.nodes."):
            return to_plain(state.get("_val"), _depth + 1)
        if obj.state is None and len(obj.args) == 1 and not obj.kwargs:
            return to_plain(obj.args[0], _depth + 1)        # an enum member: Enum(value)
        return obj
    if isinstance(obj, argparse.Namespace):
        return {k: to_plain(v, _depth + 1) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {k: to_plain(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v, _depth + 1) for v in obj) if isinstance(obj, list) else \
            tuple(to_plain(v, _depth + 1) for v in obj)
    return obj


def record_state(obj: Any, kind_suffix: str) -> dict:
    """The pickled ``__dict__`` of a record whose class name ends with ``kind_suffix``; a plain
    dict (talklip's own checkpoints, e.g. from train_expert.py) is taken as that state."""
    if isinstance(obj, dict):
        return obj
    if not isinstance(obj, PickledRecord) or not _record_kind(obj).endswith(kind_suffix):
        raise CheckpointError(f"expected a pickled {kind_suffix}, found {type(obj).__name__}")
    return obj.state if isinstance(obj.state, dict) else {}

