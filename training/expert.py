"""Fine-tune (or train from scratch at a small size) the AV-HuBERT seq2seq lip reader that TalkLip
uses as its expert, on an LRS2-layout corpus. The result loads with ``load_avhubert`` (and so with
``train.py --avhubert_path`` and the observer-1 evaluation): talklip's own checkpoint format, a
plain-dict version of fairseq's (``cfg``, ``model``, ``task_state`` with dictionary + sentencepiece).
"""
import dataclasses
from dataclasses import dataclass
import io
import math
import os
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from tqdm import tqdm

from utils.corpus import read_transcript
from models.avhubert import AVHubertSeq2Seq, load_avhubert, load_lip_reader
from models.avhubert.model import AVHubertModel
from models.avhubert.tokenizer import Dictionary, SentencePieceTokenizer, TextCodec
from models.avhubert.expert_input import ROI_SOURCE, ROI_STD, collate_targets, collate_videos, frames_to_mouth_rois, lip_reading_loss
from models.presets import decoder_preset, encoder_preset
from training.config import ExpertConfig
from training.mouth_augment import ROI_HIGH, ROI_LOW, CropAugment
from utils.audio import AUDIO_RATE_HZ, audio_visual_align, load_audio, talklip_features
from utils.checkpoint import load_torch_file, save_atomic
from utils.device import resolve_device
from utils.errors import CheckpointError, TalkLipError
from utils.fileio import read_filelist
from utils.video import VideoReader

def build_codec(lines: List[str], vocab_size: int) -> TextCodec:
    """A unigram sentencepiece model over the transcripts and its fairseq dictionary."""
    import sentencepiece as spm
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size,
                                   model_type="unigram", hard_vocab_limit=False, minloglevel=2)
    tok = SentencePieceTokenizer(model_proto=buf.getvalue())
    pieces = [tok.sp.id_to_piece(i) for i in range(tok.sp.get_piece_size())]
    symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [p for p in pieces if p not in ("<unk>", "<s>", "</s>")]
    return TextCodec(Dictionary(symbols), tok)


def new_model(preset: str, vocab: int) -> AVHubertSeq2Seq:
    """A randomly initialised lip reader of a registry size (models.presets) over ``vocab`` tokens."""
    enc = encoder_preset(preset)
    return AVHubertSeq2Seq(enc, decoder_preset(preset, vocab_size=vocab, encoder_embed_dim=enc.encoder_embed_dim))


def from_init(init, vocab: int) -> AVHubertSeq2Seq:
    """A seq2seq model whose encoder (and decoder, when the vocabulary matches) come from a loaded
    AV-HuBERT pretraining or seq2seq model."""
    if isinstance(init, AVHubertSeq2Seq):
        if init.decoder.embed_tokens.weight.shape[0] == vocab:
            return init
        model = AVHubertSeq2Seq(init.encoder.w2v_model.cfg,
                                dataclasses.replace(init.decoder.cfg, vocab_size=vocab))
        model.encoder.load_state_dict(init.encoder.state_dict())
        return model
    if isinstance(init, AVHubertModel):
        dec = decoder_preset("large" if init.cfg.encoder_embed_dim == 1024 else "base", vocab_size=vocab,
                             encoder_embed_dim=init.cfg.encoder_embed_dim)
        model = AVHubertSeq2Seq(init.cfg, dec)
        model.encoder.w2v_model.load_state_dict(init.state_dict())
        return model
    raise CheckpointError(f"{type(init).__name__} is not an AV-HuBERT model")


def save_expert(model: AVHubertSeq2Seq, codec: TextCodec, path: str, extra: Optional[Dict] = None):
    enc = dataclasses.asdict(model.encoder.w2v_model.cfg)
    dec = {k: v for k, v in dataclasses.asdict(model.decoder.cfg).items() if k not in ("vocab_size", "encoder_embed_dim")}
    d = codec.dictionary
    save_atomic({"cfg": {"model": {"_name": "av_hubert_seq2seq", "w2v_args": {"model": enc}, **dec},
                         "task": {"_name": "av_hubert_pretraining", "is_s2s": True, "modalities": ["video"]}},
                 "model": model.state_dict(),
                 "task_state": {"target_dictionary": {"symbols": d.symbols, "bos_index": d.bos_index,
                                                      "pad_index": d.pad_index, "eos_index": d.eos_index,
                                                      "unk_index": d.unk_index, "nspecial": d.nspecial},
                                "s2s_tokenizer": {"sp": codec.tokenizer.sp.serialized_model_proto()}},
                 **(extra or {})}, path)


@dataclass(frozen=True)
class AdversarialCrops:
    """Adversarial training on the crops: ``steps`` signed-gradient steps (1: FGSM, more: PGD with step
    2.5 eps / steps) that raise the expert's own loss, within ``eps_grey`` grey levels of the given crops
    and inside [black, white]. ``eps_grey`` 0: off (the crops are returned as they are)."""
    eps_grey: float = 0.0
    steps: int = 1

    def __call__(self, model, video, mask, target, prev, audio=None) -> torch.Tensor:
        if self.eps_grey <= 0 or self.steps <= 0:
            return video
        eps = self.eps_grey / 255.0 / ROI_STD
        step = eps if self.steps == 1 else 2.5 * eps / self.steps
        clean = video.detach()
        attacked = clean.clone()
        for _ in range(self.steps):
            attacked.requires_grad_(True)
            loss = lip_reading_loss(model, attacked, mask, target, prev, audio=audio)["loss"]
            grad, = torch.autograd.grad(loss, attacked)
            attacked = attacked.detach() + step * grad.sign()
            attacked = torch.minimum(torch.maximum(attacked, clean - eps), clean + eps).clamp(ROI_LOW, ROI_HIGH)
        return attacked.detach()


def central_square(frame: np.ndarray, side: int = ROI_SOURCE) -> np.ndarray:
    """The central ``side`` x ``side`` of a frame (all of a smaller side): what ``frames_to_mouth_rois`` reads."""
    top, left = max(0, (frame.shape[0] - side) // 2), max(0, (frame.shape[1] - side) // 2)
    return frame[top:top + side, left:left + side]


def frame_labels(path: str, frames: int) -> torch.Tensor:
    """(frames,) per-frame class ids from a corpus' gt ``.npz``: the readable corpus' ``viseme``, or GRID's word at
    each frame (``words`` / ``word_start_s`` / ``word_end_s``, preparation.grid: 0 in a pause)."""
    with np.load(path) as data:
        if "viseme" in data.files:
            return torch.from_numpy(data["viseme"]).long()
        if "words" in data.files:
            from preparation.grid import frame_word_ids
            return torch.from_numpy(frame_word_ids(data["words"], data["word_start_s"], data["word_end_s"], frames))
    raise TalkLipError(f"{path} holds no per-frame labels (a readable corpus' viseme, or GRID's word timings): "
                       f"--viseme_root must be the gt/ folder of make_synthetic --grammar grid or preparation.grid")


def frame_label_classes(path: str) -> int:
    """How many frame classes a gt file's labels have (visemes, or GRID's words and the pause)."""
    with np.load(path) as data:
        if "viseme" in data.files:
            from preparation.visemes import VISEMES
            return len(VISEMES)
    from preparation.grid import VOCABULARY
    return len(VOCABULARY) + 1


class ClipCache:
    """Mouth crops and targets of a split, read once (the corpora this is for are small); with
    ``viseme_root`` (a corpus' gt/ folder) also each frame's label (``frame_labels``); with ``audio`` also
    each clip's speech as TalkLip's audio features (read from the video's own sound track), one row
    per frame."""

    def __init__(self, names, video_root, word_root, codec, progress: bool = True, viseme_root: Optional[str] = None,
                 audio: bool = False):
        self.items, self.codec, self.visemes, self.audio = [], codec, [], []
        for name in tqdm(names, desc="reading clips", unit="clip", leave=False, disable=not progress):
            path = f"{video_root}/{name}.mp4"
            with VideoReader(path) as reader:     # the central ROI_SOURCE square only, before it becomes float: the
                frames = torch.from_numpy(np.stack([central_square(f) for f in reader])).float()   # same crops, 1/3 the memory
            self.items.append((frames_to_mouth_rois(frames), codec.encode(read_transcript(word_root, name))))
            if viseme_root:
                self.visemes.append(frame_labels(f"{viseme_root}/{name}.npz", len(frames)))
            if audio:
                feats = talklip_features(load_audio(path), AUDIO_RATE_HZ)
                self.audio.append(torch.from_numpy(audio_visual_align(feats, len(frames), mode="end")))

    def batch(self, idx):
        video, mask = collate_videos([self.items[i][0] for i in idx])
        target, prev, _, ntokens = collate_targets([self.items[i][1] for i in idx])
        return video, mask, target, prev, ntokens

    def audio_batch(self, idx, length: int) -> torch.Tensor:
        """(B, 104, length) audio features, zeros past each clip's end."""
        out = torch.zeros(len(idx), self.audio[idx[0]].shape[1], length)
        for row, i in enumerate(idx):
            feats = self.audio[i][:length]
            out[row, :, :len(feats)] = feats.T
        return out

    def viseme_batch(self, idx, length: int) -> torch.Tensor:
        """(B, length) viseme ids, -100 (ignored) past each clip's end."""
        out = torch.full((len(idx), length), -100, dtype=torch.long)
        for row, i in enumerate(idx):
            ids = self.visemes[i][:length]
            out[row, :len(ids)] = ids
        return out


def lr_factor(step: int, steps: int, decay: str = "none") -> float:
    """The learning rate at ``step`` as a share of the peak: a linear warm-up over a tenth of the steps, then the
    peak held (``none``) or a cosine down to 1/20 of it at the last step (``cosine``)."""
    warm = max(1, steps // 10)
    if step < warm or decay == "none":
        return min(1.0, (step + 1) / warm)
    done = (step - warm) / max(1, steps - 1 - warm)
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))


UNK_SHARE = 0.25    # a target more than this share <unk> (the vocabulary misses its words) teaches <unk>


def usable_clips(names: List[str], word_root: str, codec: TextCodec, longest: int, split: str, log=print) -> List[str]:
    """The clips of ``split`` whose transcript makes a target: clips with an empty transcript, or one longer
    than the decoder's ``longest`` positions, are left out (counted in one line); targets more than ``UNK_SHARE``
    <unk> (the vocabulary of --init does not cover the text) are kept and counted in a warning. No clip left: an error."""
    empty, long, unknown, kept = [], [], [], []
    for name in names:
        ids = codec.encode(read_transcript(word_root, name))[:-1]          # without </s>
        if not ids:
            empty.append(name)
        elif len(ids) + 1 > longest:
            long.append(name)
        else:
            kept.append(name)
            if sum(i == codec.dictionary.unk_index for i in ids) > UNK_SHARE * len(ids):
                unknown.append(name)
    if empty or long:
        log(f"warning: {split}: left out {len(empty)} clip(s) with an empty transcript"
            + (f" ({', '.join(empty[:3])}{', ...' if len(empty) > 3 else ''})" if empty else "")
            + f" and {len(long)} with a target longer than the decoder's {longest} positions"
            + (f" ({', '.join(long[:3])}{', ...' if len(long) > 3 else ''})" if long else ""))
    if unknown:
        log(f"warning: {split}: {len(unknown)} of {len(kept)} clips' transcripts are over {UNK_SHARE:.0%} <unk> in this vocabulary "
            f"(e.g. {unknown[0]}): --init's dictionary does not cover the text; train without --init's decoder, or "
            f"fix the transcripts")
    if not kept:
        raise TalkLipError(f"no {split} clip of {word_root} has a usable transcript (all empty or too long): "
                           f"check the .txt files")
    return kept


# AV-HuBERT's modality dropout as the expert uses it (--audio_visual): the share of steps that show the
# video alone, the audio alone, or both. Reading lips stays the main task (every evaluation is video only).
MODALITY_SHARES = {"video": 0.5, "audio": 0.25, "both": 0.25}


def train_expert(cfg: ExpertConfig, log=print) -> Dict:
    """Train the expert ``cfg`` describes and save it to ``cfg.out`` (with ``cfg`` itself, as ``expert_config``:
    the file says how it was made); return its validation results. With ``viseme_root`` (the synthetic
    corpus' gt/ folder) a linear head on the encoder also learns each frame's viseme (weight
    ``viseme_weight``): frame-level supervision that gets the visual front end reading sooner. The
    head is dropped when the expert is saved; the file is a plain AV-HuBERT seq2seq lip reader.
    ``eval_every`` > 0 logs the validation WER (greedy) and token accuracy every that many steps, kept
    in the result's ``curve``. ``test_filelist`` also reports the held-out WER (and blank-video WER) on
    those clips as ``test_wer`` / ``test_wer_blank``. ``audio_visual`` also trains the encoder on each
    clip's speech (AV-HuBERT's modality dropout, ``MODALITY_SHARES``): the released AV-HuBERT encoders
    read both, and TalkLip's audio encoder starts from the expert's, so a small expert trained on
    video alone would hand the generator an audio path that never learnt anything.

    Robustness, so that the expert's gradient draws mouths rather than patterns only it reads
    (evaluation.expert_transfer measures it): ``augment`` changes every training clip's crops by a random
    draw (noise, blur, shift: randomized smoothing); ``adversarial`` trains on crops perturbed against the
    expert itself (FGSM / PGD within a few grey levels), after the augmentation. Both act on the video
    only, and never in evaluation. Their settings are kept in the result (and so in the file)."""
    if not cfg.out:
        raise TalkLipError("the expert's config names no output file (out / --out): give the checkpoint to write")
    file_dir, video_root, word_root, init, steps, seed = (cfg.file_dir, cfg.video_root, cfg.word_root, cfg.init,
                                                           cfg.steps, cfg.seed)
    viseme_root, viseme_weight, audio_visual = cfg.viseme_root, cfg.viseme_weight, cfg.audio_visual
    device, progress = resolve_device(cfg.device), not cfg.no_progress
    augment = CropAugment(noise_std=cfg.noise_std, blur_sigma=cfg.blur_sigma, shift_px=cfg.shift_px)
    adversarial = AdversarialCrops(eps_grey=cfg.adv_eps, steps=cfg.adv_steps)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    draws = torch.Generator().manual_seed(seed)       # the augmentations' own stream: the batch order stays the seed's
    train_names = read_filelist(os.path.join(file_dir, "train.txt"))
    valid_names = read_filelist(os.path.join(file_dir, "valid.txt"))
    lines = [read_transcript(word_root, n).lower() for n in train_names]
    base = load_avhubert(init) if init else None
    if isinstance(base, AVHubertSeq2Seq) and base.codec is not None:
        if cfg.vocab_from:
            raise TalkLipError(f"--init {init} brings its own vocabulary: leave out --vocab_from {cfg.vocab_from}")
        codec, model = base.codec, base
    else:
        codec = (load_lip_reader(cfg.vocab_from, "--vocab_from needs a lip reader that train_expert.py wrote").codec
                 if cfg.vocab_from else build_codec(lines, cfg.vocab_size))
        vocab = len(codec.dictionary)
        model = from_init(base, vocab) if base is not None else new_model(cfg.preset, vocab)
    model = model.to(device).train()
    longest = model.decoder.cfg.max_target_positions
    train_names = usable_clips(train_names, word_root, codec, longest, "train", log)
    valid_names = usable_clips(valid_names, word_root, codec, longest, "valid", log)
    train = ClipCache(train_names, video_root, word_root, codec, progress, viseme_root, audio=audio_visual)
    valid = ClipCache(valid_names, video_root, word_root, codec, progress, audio=audio_visual)
    head = None
    if viseme_root:
        classes = frame_label_classes(f"{viseme_root}/{train_names[0]}.npz")
        head = torch.nn.Linear(model.encoder.w2v_model.cfg.encoder_embed_dim, classes).to(device)
    params = list(model.parameters()) + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, cfg.lr_decay))
    started, bar = time.time(), tqdm(range(steps), desc="train expert", unit="step", disable=not progress)
    curve: List[Dict] = []
    for step in bar:
        idx = rng.choice(len(train.items), size=min(cfg.batch_size, len(train.items)), replace=False)
        video, mask, target, prev, ntokens = (t.to(device) if torch.is_tensor(t) else t for t in train.batch(idx))
        audio = None
        if audio_visual:
            shown = rng.choice(list(MODALITY_SHARES), p=list(MODALITY_SHARES.values()))
            if shown != "video":
                audio = train.audio_batch(idx, video.shape[2]).to(device)
            if shown == "audio":
                video = None
        if video is not None:
            video = adversarial(model, augment(video, draws), mask, target, prev, audio)
        out = lip_reading_loss(model, video, mask, target, prev, audio=audio)
        loss = out["loss"] / ntokens
        if head is not None:
            enc = out["encoder_out"]                          # (T, B, C)
            frame_ids = train.viseme_batch(idx, enc.shape[0]).to(device)
            loss = loss + viseme_weight * torch.nn.functional.cross_entropy(
                head(enc.transpose(0, 1)).reshape(-1, head.out_features), frame_ids.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        sched.step()
        bar.set_postfix_str(f"loss {loss.item():.3f} acc {float(out['n_correct']) / float(out['total']):.3f}")
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < steps:
            point = {"step": step + 1, "seconds": round(time.time() - started, 1),
                     **evaluate_expert(model, valid, device, blank=False)}
            curve.append(point)
            log(f"expert step {point['step']} ({point['seconds']} s): validation WER {point['wer']:.3f}, "
                f"token accuracy {point['token_acc']:.3f}")
    result = {"steps": steps, "augment": dataclasses.asdict(augment), "adversarial": dataclasses.asdict(adversarial),
              "seconds": round(time.time() - started, 1), **evaluate_expert(model, valid, device),
              **{f"train_{k}": v for k, v in evaluate_expert(model, train, device, decode=False).items()},
              "curve": curve}
    if cfg.test_filelist:
        test = ClipCache(read_filelist(cfg.test_filelist), video_root, word_root, codec, progress, audio=audio_visual)
        result.update({f"test_{k}": v for k, v in evaluate_expert(model, test, device).items()})
    log(f"expert: validation token accuracy {result['token_acc']:.3f} ({result['token_acc_blank']:.3f} with the "
        f"video blanked, i.e. from the text prior alone), WER {result['wer']:.3f} ({result['wer_blank']:.3f} "
        f"blanked); on its training clips {result['train_token_acc']:.3f} ({result['train_token_acc_blank']:.3f} blanked)"
        + (f"; test clips WER {result['test_wer']:.3f} ({result['test_wer_blank']:.3f} blanked)" if cfg.test_filelist else ""))
    save_expert(model.eval(), codec, cfg.out, {"train_summary": result, "expert_config": dataclasses.asdict(cfg)})
    return result


def evaluate_reader(ckpt_path: str, file_dir: str, video_root: str, word_root: str,
                    test_filelist: Optional[str] = None, device="cpu", progress: bool = True, log=print) -> Dict:
    """A trained reader's results on this corpus without training it: ``train_expert``'s fields for the
    held-out clips of ``test_filelist`` (``test_wer`` / ``test_wer_blank`` / ``test_token_acc`` ...) or,
    without one, for the validation split (file_dir/valid.txt); plus ``trained`` (the summary of its own
    training run, kept in the file). For readers trained once and shipped (the quickstart's grid readers)."""
    model = load_lip_reader(ckpt_path, "give a reader train_expert.py wrote").to(device)
    result = {"trained": _train_summary(ckpt_path)}
    if test_filelist:      # the held-out clips only
        test = ClipCache(read_filelist(test_filelist), video_root, word_root, model.codec, progress)
        result.update({f"test_{k}": v for k, v in evaluate_expert(model, test, device).items()})
        log(f"{ckpt_path}: test clips WER {result['test_wer']:.3f} ({result['test_wer_blank']:.3f} with the video "
            f"blanked), token accuracy {result['test_token_acc']:.3f} ({result['test_token_acc_blank']:.3f} blanked)")
        return result
    valid = ClipCache(read_filelist(os.path.join(file_dir, "valid.txt")), video_root, word_root, model.codec, progress)
    result.update(evaluate_expert(model, valid, device))
    log(f"{ckpt_path}: validation WER {result['wer']:.3f} ({result['wer_blank']:.3f} with the video blanked)")
    return result


def _train_summary(ckpt_path: str) -> Dict:
    saved = load_torch_file(ckpt_path, "lip reader", mmap=True)
    summary = (saved.get("train_summary") if isinstance(saved, dict) else None) or {}
    return {k: summary[k] for k in ("steps", "seconds", "wer", "wer_blank", "test_wer", "test_wer_blank") if k in summary}


@torch.no_grad()
def evaluate_expert(model, clips: ClipCache, device, decode: bool = True, blank: bool = True) -> Dict[str, float]:
    """Teacher-forced token accuracy with the clips' mouths ('token_acc'), (``blank``) with the video
    blanked ('token_acc_blank': what the decoder's text prior alone gets, the chance level of lip
    reading) and, for clips read with their audio, from the speech alone ('token_acc_audio'); and
    (``decode``) the WER of greedy decoding ('wer', and 'wer_blank' with ``blank``)."""
    from utils.wer import error_rates
    model.eval()
    shows = ["token_acc"] + (["token_acc_blank"] if blank else []) + (["token_acc_audio"] if clips.audio else [])
    correct = dict.fromkeys(shows, 0)
    total = 0
    refs, hyps, hyps_blank = [], [], []
    for i in range(len(clips.items)):
        video, mask, target, prev, _ = (t.to(device) if torch.is_tensor(t) else t for t in clips.batch([i]))
        for key in shows:
            shown, audio = video, None
            if key == "token_acc_blank":
                shown = torch.zeros_like(video)
            elif key == "token_acc_audio":
                shown, audio = None, clips.audio_batch([i], video.shape[2]).to(device)
            out = lip_reading_loss(model, shown, mask, target, prev, audio=audio)
            correct[key] += int(out["n_correct"])
        total += int(out["total"])
        if decode:
            refs.append(clips.codec.decode(clips.items[i][1]))
            hyps.append(clips.codec.decode(model.generate(video=video, padding_mask=mask, beam=1)[0]))
            if blank:
                ids = model.generate(video=torch.zeros_like(video), padding_mask=mask, beam=1)[0]
                hyps_blank.append(clips.codec.decode(ids))
    model.train()
    result = {k: v / max(1, total) for k, v in correct.items()}
    if decode:
        result["wer"] = error_rates(refs, hyps)["wer"] if refs else 1.0
        if blank:
            result["wer_blank"] = error_rates(refs, hyps_blank)["wer"] if refs else 1.0
    return result
