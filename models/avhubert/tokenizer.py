"""Target dictionary and sentencepiece tokenizer, as fairseq + sentencepiece use them.

A transcript becomes ids as AV-HuBERT's ``LabelEncoderS2SToken`` does: lower-cased, split into
sentencepiece pieces, each piece looked up in the fairseq dictionary (unknown -> <unk>), </s>
appended. Ids become text as fairseq's ``Dictionary.string`` + ``SentencepieceBPE.decode``:
pieces joined, '▁' turned into spaces.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

from models.avhubert.fairseq_pickle import read_fairseq_file, record_state
from utils.errors import CheckpointError

SPECIAL_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>")
SP_SPACE = "\u2581"


@dataclass
class Dictionary:
    """fairseq's symbol table: <s>=0, <pad>=1, </s>=2, <unk>=3, then the vocabulary."""

    symbols: List[str] = field(default_factory=lambda: list(SPECIAL_SYMBOLS))
    bos_index: int = 0
    pad_index: int = 1
    eos_index: int = 2
    unk_index: int = 3
    nspecial: int = 4

    def __post_init__(self):
        self.indices: Dict[str, int] = {s: i for i, s in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    bos = property(lambda self: self.bos_index)
    pad = property(lambda self: self.pad_index)
    eos = property(lambda self: self.eos_index)
    unk = property(lambda self: self.unk_index)

    @classmethod
    def load_txt(cls, path: str) -> "Dictionary":
        """A fairseq ``dict.txt``: one '<symbol> <count>' per line after the four specials."""
        if not os.path.isfile(path):
            raise CheckpointError(f"dictionary file {path} does not exist: check the path")
        symbols = list(SPECIAL_SYMBOLS)
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                parts = line.rstrip("\n").rsplit(" ", 2 if line.rstrip().endswith("#fairseq:overwrite") else 1)
                if len(parts) < 2 or not parts[1].lstrip("-").isdigit():
                    raise CheckpointError(f"{path} line {number} is not '<symbol> <count>': {line.strip()!r}")
                symbols.append(parts[0])
        return cls(symbols)

    @classmethod
    def from_pickled(cls, record) -> "Dictionary":
        state = record_state(record, "Dictionary")
        try:
            return cls(list(state["symbols"]), state["bos_index"], state["pad_index"],
                       state["eos_index"], state["unk_index"], state.get("nspecial", 4))
        except KeyError as exc:
            raise CheckpointError(f"pickled fairseq Dictionary lacks {exc}") from None

    def encode_pieces(self, pieces: Iterable[str], append_eos: bool = True) -> List[int]:
        ids = [self.indices.get(p, self.unk_index) for p in pieces]
        return ids + [self.eos_index] if append_eos else ids

    def string(self, ids: Sequence[int]) -> str:
        """Symbols joined by spaces, without <pad>, </s> and <s> (fairseq's Dictionary.string)."""
        skip = {self.pad_index, self.eos_index, self.bos_index}
        return " ".join(self.symbols[i] for i in ids if int(i) not in skip)


class SentencePieceTokenizer:
    """fairseq's SentencepieceBPE: text <-> space-separated pieces."""

    def __init__(self, model_proto: bytes = None, model_file: str = None):
        import sentencepiece
        self.sp = sentencepiece.SentencePieceProcessor()
        if model_proto is not None:
            self.sp.LoadFromSerializedProto(model_proto)
        elif model_file is not None:
            if not os.path.isfile(model_file):
                raise CheckpointError(f"sentencepiece model {model_file} does not exist: check the path")
            self.sp.Load(model_file)
        else:
            raise ValueError("give model_proto or model_file")

    @classmethod
    def from_pickled(cls, record) -> "SentencePieceTokenizer":
        processor = record_state(record, "SentencepieceBPE").get("sp")
        proto = processor if isinstance(processor, (bytes, bytearray)) else getattr(processor, "state", None)
        if isinstance(proto, dict):            # sentencepiece >= 0.2 pickles a dict of options
            proto = proto.get("model_proto")
        if not isinstance(proto, (bytes, bytearray)):
            raise CheckpointError("pickled SentencepieceBPE holds no serialized sentencepiece model")
        return cls(model_proto=bytes(proto))

    def encode(self, text: str) -> List[str]:
        return self.sp.EncodeAsPieces(text)

    @staticmethod
    def decode(pieces: str) -> str:
        return pieces.replace(" ", "").replace(SP_SPACE, " ").strip()


@dataclass
class TextCodec:
    """Transcript <-> target ids for a seq2seq lip reader."""

    dictionary: Dictionary
    tokenizer: SentencePieceTokenizer

    def encode(self, text: str) -> List[int]:
        return self.dictionary.encode_pieces(self.tokenizer.encode(text.lower()), append_eos=True)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(self.dictionary.string(ids))


@dataclass
class TaskState:
    """What AV-HuBERT's task pickles into checkpoints and TalkLip's ``task_state.pt``."""

    label_dictionaries: List[Dictionary]
    target_dictionary: Optional[Dictionary]
    tokenizer: Optional[SentencePieceTokenizer]

    @classmethod
    def from_pickled(cls, state: dict) -> "TaskState":
        if not isinstance(state, dict):
            raise CheckpointError("task state is not a dict of fairseq objects")
        labels = [Dictionary.from_pickled(d) for d in state.get("dictionaries") or [] if d is not None]
        target = state.get("target_dictionary")
        tokenizer = state.get("s2s_tokenizer")
        return cls(labels, Dictionary.from_pickled(target) if target is not None else None,
                   SentencePieceTokenizer.from_pickled(tokenizer) if tokenizer is not None else None)

    @classmethod
    def load(cls, path: str) -> "TaskState":
        return cls.from_pickled(read_fairseq_file(path, what="task state"))

    def codec(self) -> TextCodec:
        if self.target_dictionary is None or self.tokenizer is None:
            raise CheckpointError("this task state has no target dictionary or tokenizer "
                                  "(it is not from a seq2seq fine-tuned model)")
        return TextCodec(self.target_dictionary, self.tokenizer)
