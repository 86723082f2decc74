"""Native AV-HuBERT: loading original-format checkpoints, numerics, decoding, training pieces."""
import argparse
import itertools
import math
import os

import pytest
import torch
import torch.nn.functional as F

from models.avhubert import (AVHubertModel, AVHubertSeq2Seq, DecoderConfig, Dictionary, EncoderConfig,
                             TaskState, freeze_all_but, load_avhubert)
from models.avhubert.generate import beam_search, greedy_search
from models.avhubert.modules import MultiheadAttention
from models.avhubert.expert_input import (collate_targets, images_to_avhubert, label_smoothed_nll_loss,
                                      lip_reading_loss)
from tests.conftest import SHARED_FIXTURES
from tests.fairseq_format import save_fairseq_checkpoint
from tests.tiny_models import TINY_DECODER, TINY_ENCODER, randomise
from utils.errors import CheckpointError

def video_batch(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    clips = [torch.randn(1, 1, n, 88, 88, generator=gen) for n in lengths]
    steps = max(lengths)
    video = torch.zeros(len(lengths), 1, steps, 88, 88)
    mask = torch.ones(len(lengths), steps, dtype=torch.bool)
    for i, (clip, n) in enumerate(zip(clips, lengths)):
        video[i, :, :n] = clip[0]
        mask[i, :n] = False
    return clips, video, mask


def test_seq2seq_checkpoint_loads_strictly_and_matches(seq2seq_checkpoint):
    path, reference = seq2seq_checkpoint
    model = load_avhubert(path)
    assert isinstance(model, AVHubertSeq2Seq) and not model.training
    assert model.encoder.w2v_model.cfg.layer_norm_first and model.decoder.cfg.decoder_layers == 2
    _, video, mask = video_batch([6, 9])
    tokens = torch.tensor([[2, 5, 7, 9], [2, 4, 1, 1]])
    with torch.no_grad():
        ours = model(video=video, padding_mask=mask, prev_output_tokens=tokens)
        expected = reference(video=video, padding_mask=mask, prev_output_tokens=tokens)
        features, feature_mask = model.extract_features(video=video, padding_mask=mask)
    assert ours.shape == (2, 4, len(model.codec.dictionary))
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    assert features.shape == (9, 2, 32) and feature_mask.shape == (2, 9)
    assert model.codec.decode(model.codec.encode("several people today")) == "several people today"


def test_legacy_args_pretraining_checkpoint(tmp_path):
    reference = randomise(AVHubertModel(EncoderConfig.from_fairseq(TINY_ENCODER, num_label_embs=12)), 1).eval()
    state = dict(reference.state_dict())
    state["final_proj.weight"], state["final_proj.bias"] = torch.randn(16, 32), torch.randn(16)
    args = argparse.Namespace(arch="av_hubert", **{k: v for k, v in TINY_ENCODER.items() if k != "_name"})
    path = tmp_path / "base_pretrain.pt"
    save_fairseq_checkpoint(path, args=args, model_state=state)
    model = load_avhubert(str(path))
    assert isinstance(model, AVHubertModel) and model.label_embs_concat.shape == (12, 16)
    audio = torch.randn(2, 104, 11)
    with torch.no_grad():
        ours, _ = model.extract_features(audio=audio)
        expected, _ = reference.extract_features(audio=audio)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_wrong_keys_give_a_readable_diff(tmp_path, seq2seq_checkpoint):
    _, reference = seq2seq_checkpoint
    state = dict(reference.state_dict())
    state.pop("decoder.layers.1.fc1.weight")
    state["decoder.layers.1.fc9.weight"] = torch.zeros(1)
    cfg = {"model": {"_name": "av_hubert_seq2seq", "w2v_args": {"model": TINY_ENCODER}, **TINY_DECODER}}
    path = tmp_path / "bad.pt"
    save_fairseq_checkpoint(path, cfg=cfg, model_state=state)
    with pytest.raises(CheckpointError) as err:
        load_avhubert(str(path))
    message = str(err.value)
    assert "bad.pt" in message and "decoder.layers.1.fc1.weight" in message and "fc9" in message
    assert "\n" not in message


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_forbidden_pickle_global_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "cfg": None, "payload": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="forbidden global .*system"):
        load_avhubert(str(path))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="missing.pt does not exist"):
        load_avhubert(str(tmp_path / "missing.pt"))


def reference_attention(attn, query, key, key_padding_mask=None, causal=False):
    """Multi-head attention written out in float64 from the projection weights."""
    d = lambda t: t.detach().double()
    q = query.double() @ d(attn.q_proj.weight).T + d(attn.q_proj.bias)
    k = key.double() @ d(attn.k_proj.weight).T + d(attn.k_proj.bias)
    v = key.double() @ d(attn.v_proj.weight).T + d(attn.v_proj.bias)
    B, T, _ = q.shape
    S, H, hd = k.shape[1], attn.num_heads, attn.head_dim
    q, k, v = (x.view(B, -1, H, hd).transpose(1, 2) for x in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    if causal:
        scores = scores.masked_fill(torch.ones(T, S, dtype=torch.bool).triu(1), float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, -1)
    return out @ d(attn.out_proj.weight).T + d(attn.out_proj.bias)


def test_attention_matches_float64_reference():
    torch.manual_seed(0)
    attn = MultiheadAttention(16, 4, kdim=12, vdim=12).eval()
    query, key = torch.randn(2, 5, 16), torch.randn(2, 7, 12)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, 4:] = True
    ours = attn(query, key, key, key_padding_mask=mask)
    torch.testing.assert_close(ours.double(), reference_attention(attn, query, key, mask), rtol=0, atol=1e-5)
    self_attn = MultiheadAttention(16, 4).eval()
    x = torch.randn(2, 6, 16)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    for padding in (None, pad):
        ours = self_attn(x, x, x, key_padding_mask=padding, causal=True)
        torch.testing.assert_close(ours.double(), reference_attention(self_attn, x, x, padding, causal=True),
                                   rtol=0, atol=1e-5)


def test_sample_unchanged_when_batched_with_a_longer_one(seq2seq_checkpoint):
    model = load_avhubert(seq2seq_checkpoint[0])
    clips, video, mask = video_batch([7, 12], seed=3)
    with torch.no_grad():
        alone, _ = model.extract_features(video=clips[0])
        batched, _ = model.extract_features(video=video, padding_mask=mask)
        torch.testing.assert_close(batched[:7, 0], alone[:, 0], rtol=0, atol=2e-5)
        ids_alone = model.generate(video=clips[0], beam=3, max_len_b=6, max_len_a=0)
        ids_batched = model.generate(video=video, padding_mask=mask, beam=3, max_len_b=6, max_len_a=0)
    assert ids_batched[0] == ids_alone[0]


def test_beam_one_equals_greedy(seq2seq_checkpoint):
    model = load_avhubert(seq2seq_checkpoint[0])
    _, video, mask = video_batch([5, 9, 7], seed=4)
    with torch.no_grad():
        enc, enc_mask = model.extract_features(video=video, padding_mask=mask)
        enc = enc.transpose(0, 1)
        for max_len_a, max_len_b in ((1.0, 0), (0.0, 4)):
            assert beam_search(model.decoder, enc, enc_mask, beam=1, max_len_a=max_len_a, max_len_b=max_len_b) == \
                greedy_search(model.decoder, enc, enc_mask, max_len_a=max_len_a, max_len_b=max_len_b)


def sequence_logprob(decoder, enc, ids, eos=2):
    """Sum of teacher-forced log-probabilities of ids + </s>, computed in one forward pass."""
    tokens = torch.tensor([[eos] + ids])
    target = torch.tensor(ids + [eos])
    lprobs = F.log_softmax(decoder(tokens, enc).float(), dim=-1)[0]
    return lprobs.gather(1, target[:, None]).sum().item()


def test_wide_beam_finds_the_exhaustive_best(codec_parts):
    torch.manual_seed(5)
    vocab = 7
    decoder = randomise(AVHubertSeq2Seq(EncoderConfig.from_fairseq(TINY_ENCODER),
                                        DecoderConfig(vocab_size=vocab, encoder_embed_dim=32, **TINY_DECODER)),
                        5).decoder.eval()
    enc = torch.randn(1, 5, 32)
    max_len, lenpen = 3, 1.0
    symbols = [t for t in range(vocab) if t not in (1, 2)]          # never <pad>; </s> ends
    best = max((sequence_logprob(decoder, enc, list(ids)) / (len(ids) + 1) ** lenpen, list(ids))
               for n in range(1, max_len + 1) for ids in itertools.product(symbols, repeat=n))
    with torch.no_grad():                   # 155 possible outputs: a beam of 160 keeps them all
        found = beam_search(decoder, enc, None, beam=160, max_len_a=0, max_len_b=max_len, lenpen=lenpen, nbest=2)
    score, ids = found[0][0]
    assert ids == best[1]
    assert score == pytest.approx(sequence_logprob(decoder, enc, ids) / (len(ids) + 1) ** lenpen, abs=1e-4)


def test_gradients_reach_generated_faces_through_the_expert(seq2seq_checkpoint):
    model = load_avhubert(seq2seq_checkpoint[0])
    for p in model.parameters():
        p.requires_grad_(False)
    frames = [torch.rand(6, 160, 160, 3) * 255, torch.rand(4, 160, 160, 3) * 255]
    boxes = [torch.tensor([[30, 35, 130, 140]] * 6), torch.tensor([[20, 20, 150, 150]] * 4)]
    picked = [torch.tensor([1, 2, 3]), torch.tensor([0, 1])]
    faces = torch.rand(5, 3, 96, 96, requires_grad=True)
    video, mask = images_to_avhubert(frames, boxes, faces, picked)
    assert video.shape == (2, 1, 6, 88, 88) and mask.tolist()[1] == [False] * 4 + [True] * 2
    target, prev, _, _ = collate_targets([[5, 6, 2], [7, 2]])
    out = lip_reading_loss(model, video, mask, target, prev)
    out["loss"].backward()
    assert faces.grad is not None and torch.isfinite(faces.grad).all() and faces.grad.abs().sum() > 0
    assert out["total"].item() == 5 and out["encoder_out"].shape == (6, 2, 32)


def test_label_smoothed_loss_is_soft_target_cross_entropy():
    torch.manual_seed(0)
    lprobs = F.log_softmax(torch.randn(6, 9, dtype=torch.float64), dim=-1)
    target = torch.tensor([3, 4, 1, 8, 1, 0])               # 1 is <pad>
    loss, nll = label_smoothed_nll_loss(lprobs, target, epsilon=0.1)
    soft = torch.full((6, 9), 0.1 / 8, dtype=torch.float64)
    soft[torch.arange(6), target] = 0.9
    keep = target.ne(1)
    assert loss.item() == pytest.approx(-(soft * lprobs)[keep].sum().item(), rel=1e-12)
    assert nll.item() == pytest.approx(-lprobs[keep, target[keep]].sum().item(), rel=1e-12)


def test_collate_targets_shifts_eos_to_the_front():
    target, prev, lengths, ntokens = collate_targets([[5, 6, 2], [7, 2]])
    assert target.tolist() == [[5, 6, 2], [7, 2, 1]] and prev.tolist() == [[2, 5, 6], [2, 7, 1]]
    assert lengths.tolist() == [3, 2] and ntokens == 5


def test_freeze_all_but_chosen_encoder_layers(seq2seq_checkpoint):
    model = load_avhubert(seq2seq_checkpoint[0])
    trainable = freeze_all_but(model.encoder, encoder_layers=(1,))
    assert trainable and all(n.startswith("w2v_model.encoder.layers.1.") for n in trainable)
    assert sum(p.requires_grad for p in model.encoder.parameters()) == len(trainable)


def test_dictionary_file_and_errors(tmp_path):
    path = tmp_path / "dict.wrd.txt"
    path.write_text("▁the 120\n▁a 80\ns 7\n")
    d = Dictionary.load_txt(str(path))
    assert d.symbols[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and d.indices["▁a"] == 5
    assert d.encode_pieces(["▁the", "zzz"]) == [4, 3, 2]
    assert d.string([4, 5, 2, 1]) == "▁the ▁a"
    path.write_text("oops\n")
    with pytest.raises(CheckpointError, match="line 1"):
        Dictionary.load_txt(str(path))


TASK_STATE = os.path.join(SHARED_FIXTURES, "talklip_task_state.pt")


@pytest.mark.skipif(not os.path.isfile(TASK_STATE), reason="shared fixtures not available")
def test_talklip_task_state_fixture_loads_without_fairseq():
    task = TaskState.load(TASK_STATE)
    assert len(task.label_dictionaries) == 1 and len(task.label_dictionaries[0]) == 2004
    assert len(task.target_dictionary) == 1000 and task.target_dictionary.symbols[:4] == \
        ["<s>", "<pad>", "</s>", "<unk>"]
    codec = task.codec()
    text = "the people in the world have a very important question"
    ids = codec.encode(text.upper())
    pieces = task.tokenizer.encode(text)
    assert ids == [task.target_dictionary.indices.get(p, 3) for p in pieces] + [2]
    assert 3 not in ids and codec.decode(ids) == text
