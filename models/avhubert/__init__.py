"""Native AV-HuBERT: encoder, seq2seq lip reader, original-checkpoint loading, decoding."""
from models.avhubert.config import DecoderConfig, EncoderConfig
from models.avhubert.load import load_avhubert, load_lip_reader, map_fairseq_keys
from models.avhubert.model import AVHubertEncoder, AVHubertModel, AVHubertSeq2Seq, freeze_all_but
from models.avhubert.tokenizer import Dictionary, SentencePieceTokenizer, TaskState, TextCodec

__all__ = ["load_avhubert", "load_lip_reader", "map_fairseq_keys", "AVHubertModel", "AVHubertEncoder", "AVHubertSeq2Seq",
           "EncoderConfig", "DecoderConfig", "freeze_all_but",
           "Dictionary", "SentencePieceTokenizer", "TaskState", "TextCodec"]
