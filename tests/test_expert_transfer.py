"""The expert-transfer probe and the expert's robustness options: the probe's gradient reaches the crops
and lowers the expert's loss, the start's blur is the blur it says, each expert-training option changes
what the expert learns, and the lip loss's augmentations act in training only."""
import dataclasses

import numpy as np
import pytest
import scipy.ndimage
import torch

from evaluation.expert_transfer import ProbeOptions, lip_loss, optimise_crops
from models.avhubert.expert_input import collate_targets, lip_reading_loss
from training.config import ExpertConfig
from training.expert import AdversarialCrops, train_expert
from training.mouth_augment import ROI_HIGH, ROI_LOW, CropAugment, blur_rois, shift
from tests.test_train import config
from training.trainer import Trainer


def test_the_blurred_start_is_a_gaussian_then_a_moving_average_edges_repeated():
    """Against scipy's own filters (truncated at 3 sigma, edges repeated: mode 'nearest')."""
    rois = torch.from_numpy(np.random.default_rng(0).normal(size=(12, 30, 30)).astype(np.float32))
    ours = blur_rois(rois, 3.0, 9).numpy()
    spatial = scipy.ndimage.gaussian_filter(rois.numpy().astype(np.float64), sigma=(0, 3.0, 3.0), truncate=3.0,
                                            mode="nearest")
    expected = scipy.ndimage.uniform_filter1d(spatial, size=9, axis=0, mode="nearest")
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_a_shift_moves_the_picture_and_repeats_the_edge():
    image = torch.arange(20.0).view(1, 4, 5)
    moved = shift(image, 2, -1)        # right by 2, up by 1
    assert torch.equal(moved[0, :3, 2:], image[0, 1:, :3])
    assert torch.equal(moved[0, :3, :2], image[0, 1:, :1].expand(3, 2))
    assert torch.equal(moved[0, 3], moved[0, 2])


def test_the_probe_s_gradient_reaches_the_crops_and_lowers_the_expert_s_loss(seq2seq_checkpoint):
    """Adam on the crops alone (the expert frozen) lowers the expert's loss for the target, changes every
    clip, keeps the pixels inside [black, white], and treats each clip as if it were alone: a clip
    optimised beside another ends where it ends by itself."""
    _, model = seq2seq_checkpoint
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    rois = [torch.randn(n, 24, 24, generator=gen).clamp(ROI_LOW, ROI_HIGH) for n in (2, 3)]   # small: any size reads
    targets = [[5, 7, 9, 2], [6, 8, 2]]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    opts = ProbeOptions(steps=3, lr=0.3)
    out = optimise_crops(model, rois, targets, opts)
    assert all(a < b - 0.01 for a, b in zip(out["loss_after"], out["loss_before"])), (out["loss_before"], out["loss_after"])
    for before, after in zip(rois, out["rois"]):
        assert after.shape == before.shape and (after - before).abs().mean() > 1e-3
        assert after.min() >= ROI_LOW - 1e-6 and after.max() <= ROI_HIGH + 1e-6
    alone = optimise_crops(model, rois[1:], targets[1:], opts)
    torch.testing.assert_close(alone["rois"][0], out["rois"][1], atol=1e-4, rtol=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())   # the expert is untouched


def test_the_augmented_lip_loss_averages_its_copies(seq2seq_checkpoint):
    """copies=K with no active augmentation is the plain loss (K identical copies averaged); an active one
    gives another value, reproducible from its generator's seed."""
    _, model = seq2seq_checkpoint
    model = model.eval()
    rois = [torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(1))]
    targets = [[5, 7, 2]]
    plain = lip_loss(model, rois, targets)
    assert float(lip_loss(model, rois, targets, copies=3)) == pytest.approx(float(plain), rel=1e-5)
    noisy = CropAugment(noise_std=1.0, shift_px=3)
    first = lip_loss(model, rois, targets, 3, noisy, torch.Generator().manual_seed(4))
    again = lip_loss(model, rois, targets, 3, noisy, torch.Generator().manual_seed(4))
    assert float(first) == float(again) and abs(float(first) - float(plain)) > 1e-3


def test_adversarial_crops_raise_the_expert_s_loss_within_epsilon(seq2seq_checkpoint):
    _, model = seq2seq_checkpoint
    model = model.eval()
    video = torch.randn(2, 1, 3, 24, 24, generator=torch.Generator().manual_seed(2)).clamp(ROI_LOW, ROI_HIGH)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    target, prev, _, _ = collate_targets([[5, 7, 2], [6, 2]])
    clean = float(lip_reading_loss(model, video, mask, target, prev)["loss"])
    for steps in (1, 3):
        attack = AdversarialCrops(eps_grey=4.0, steps=steps)
        attacked = attack(model, video, mask, target, prev)
        eps = 4.0 / 255.0 / 0.165
        assert (attacked - video).abs().max() <= eps + 1e-5
        assert float(lip_reading_loss(model, attacked, mask, target, prev)["loss"]) > clean + 1e-3, steps
    assert AdversarialCrops()(model, video, mask, target, prev) is video


def test_each_robustness_option_changes_what_the_expert_learns(corpus, tmp_path):
    """A few steps on the corpus: the same seed gives the same expert, and each option (noise, blur,
    shift, adversarial crops) gives another one, recorded in the result."""
    data, _ = corpus
    def expert(name, **options):
        cfg = ExpertConfig(file_dir=data, video_root=f"{data}/main", word_root=f"{data}/main",
                           out=str(tmp_path / f"{name}.pt"), steps=3, batch_size=2, seed=0, device="cpu",
                           no_progress=True, **options)
        result = train_expert(cfg, log=lambda *_: None)
        saved = torch.load(tmp_path / f"{name}.pt", map_location="cpu")
        assert saved["expert_config"] == dataclasses.asdict(cfg)          # the file says how it was made
        return saved["model"], result
    plain, _ = expert("plain")
    again, _ = expert("again")
    assert all(torch.equal(plain[k], again[k]) for k in plain)
    for name, options, recorded in (("noise", {"noise_std": 1.0}, {"augment": CropAugment(noise_std=1.0)}),
                                    ("blur", {"blur_sigma": 2.0}, {"augment": CropAugment(blur_sigma=2.0)}),
                                    ("shift", {"shift_px": 3}, {"augment": CropAugment(shift_px=3)}),
                                    ("adversarial", {"adv_eps": 8.0, "adv_steps": 1},
                                     {"adversarial": AdversarialCrops(eps_grey=8.0, steps=1)})):
        weights, result = expert(name, **options)
        assert not all(torch.equal(plain[k], weights[k]) for k in plain), name
        for key, value in recorded.items():
            assert result[key] == dataclasses.asdict(value), name


def test_the_lip_loss_augmentation_acts_in_training_only(corpus, one_shard, tiny_expert, tmp_path):
    """--lip_augment changes a stage-2 training step's lip loss (and so the weights), and nothing else:
    the validation reading of the generated mouths is the same as without it, bit for bit."""
    def trainer(copies):
        return Trainer(config(corpus, one_shard, tiny_expert, tmp_path / f"ck{copies}", start_stage=2, lip_w=0.5,
                              seed=3, lip_augment=copies, lip_augment_noise=1.0))
    plain, augmented = trainer(0), trainer(4)
    assert plain.validate() == augmented.validate()
    plain_logs = plain.train_step(plain.next_micro_batches()).logs
    augmented_logs = augmented.train_step(augmented.next_micro_batches()).logs
    assert abs(plain_logs["lip"] - augmented_logs["lip"]) > 1e-4
    assert plain_logs["l1"] == augmented_logs["l1"]


def test_bad_targets_are_left_out_or_warned_about(corpus, tmp_path):
    """train_expert's targets: an empty transcript and one longer than the decoder's positions are left
    out with a count; a transcript the vocabulary does not cover (over a quarter <unk>) is kept with a warning; no
    usable clip at all is an error naming the folder."""
    from training.expert import build_codec, usable_clips
    from utils.corpus import read_transcript
    from utils.errors import TalkLipError
    data, splits = corpus
    names = splits["train"]
    words = tmp_path / "words"
    for name in names:
        (words / name).parent.mkdir(parents=True, exist_ok=True)
        (words / f"{name}.txt").write_text(f"Text:  {read_transcript(f'{data}/main', name)}\n")
    (words / f"{names[0]}.txt").write_text("Text:  \n")
    (words / f"{names[1]}.txt").write_text("Text:  " + " ".join(["ABOUT"] * 40) + "\n")
    (words / f"{names[2]}.txt").write_text("Text:  ÆØÅ ŒŒ ÞÞ\n")           # letters no transcript has
    codec = build_codec([read_transcript(f"{data}/main", n).lower() for n in names], 40)
    said = []
    kept = usable_clips(names, str(words), codec, 30, "train", said.append)
    assert kept == names[2:]
    assert len(said) == 2 and "left out 1 clip(s) with an empty transcript" in said[0] and "1 with a target longer" in said[0]
    assert f"1 of {len(kept)} clips' transcripts are over 25% <unk>" in said[1] and names[2] in said[1]
    for name in names[2:]:
        (words / f"{name}.txt").write_text("Text:  \n")
    with pytest.raises(TalkLipError, match="no train clip of .* has a usable transcript"):
        usable_clips(names, str(words), codec, 30, "train", said.append)


@pytest.fixture(scope="module")
def second_expert(corpus, tiny_expert, tmp_path_factory):
    """Another tiny expert (other initial weights) over tiny_expert's vocabulary, as an ensemble needs."""
    from models.avhubert import load_lip_reader
    from training.expert import new_model, save_expert
    codec = load_lip_reader(tiny_expert, "").codec
    torch.manual_seed(7)
    path = str(tmp_path_factory.mktemp("second") / "expert.pt")
    save_expert(new_model("tiny", len(codec.dictionary)), codec, path)
    return path


def test_an_ensemble_reads_with_its_members_mean_log_probabilities(tiny_expert, second_expert, tmp_path):
    """The ensemble's output is the mean of its members' log-softmax (recomputed here in float64), its lip
    loss the label-smoothed cross-entropy of that mean renormalised, a one-reader ensemble's loss is the
    reader's own, and two readers with different vocabularies are refused in one line naming the fix."""
    from models.avhubert import load_lip_reader
    from models.avhubert.ensemble import ExpertEnsemble
    from training.expert import build_codec, new_model, save_expert
    from utils.errors import TalkLipError
    a, b = (load_lip_reader(p, "").eval() for p in (tiny_expert, second_expert))
    video = torch.randn(2, 1, 4, 88, 88, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[1, 3] = True
    target, prev, _, _ = collate_targets([a.codec.encode("bin blue"), a.codec.encode("set red at")])
    with torch.no_grad():
        both = ExpertEnsemble([a, b]).eval()
        mean = both(video=video, padding_mask=mask, prev_output_tokens=prev)
        expected = sum(torch.log_softmax(m(video=video, padding_mask=mask, prev_output_tokens=prev).double(), -1)
                       for m in (a, b)) / 2
        torch.testing.assert_close(mean.double(), expected, atol=1e-5, rtol=0)
        lp = torch.log_softmax(expected, -1).view(-1, expected.shape[-1])
        flat = target.view(-1)
        keep = flat.ne(1)
        eps = 0.1 / (lp.shape[-1] - 1)
        smoothed = (-(1 - 0.1 - eps) * lp.gather(1, flat[:, None])[:, 0] - eps * lp.sum(-1))[keep].sum()
        ours = lip_reading_loss(both, video, mask, target, prev)["loss"]
        assert float(ours) == pytest.approx(float(smoothed), rel=1e-5)
        alone = lip_reading_loss(a, video, mask, target, prev)["loss"]
        assert float(lip_reading_loss(ExpertEnsemble([a]), video, mask, target, prev)["loss"]) == pytest.approx(
            float(alone), rel=1e-6)
        assert abs(float(ours) - float(alone)) > 1e-3
    other = build_codec(["one two three", "four five six seven"], 30)
    torch.manual_seed(1)
    path = str(tmp_path / "other.pt")
    save_expert(new_model("tiny", len(other.dictionary)), other, path)
    with pytest.raises(TalkLipError, match=r"other.pt has another vocabulary .*--vocab_from"):
        ExpertEnsemble([a, load_lip_reader(path, "")], [tiny_expert, path])


def test_vocab_from_gives_the_new_expert_that_reader_s_vocabulary(corpus, tiny_expert, tmp_path):
    """train_expert --vocab_from: the expert it writes carries the reader's dictionary, not one learnt
    anew (which, from these transcripts at another size, differs); with --init that brings its own it is
    one line."""
    from models.avhubert import load_lip_reader
    from utils.errors import TalkLipError
    from training.expert import build_codec, new_model, save_expert
    from utils.corpus import read_transcript
    data, splits = corpus
    lines = [read_transcript(f"{data}/main", n).lower() for n in splits["train"]]
    codec = build_codec(lines + ["zebra quilt jukebox vortex"] * 8, 60)     # the corpus' words and more
    reader = str(tmp_path / "reader.pt")
    save_expert(new_model("tiny", len(codec.dictionary)), codec, reader)
    base = dict(file_dir=data, video_root=f"{data}/main", word_root=f"{data}/main", steps=2, batch_size=2, seed=5,
                device="cpu", no_progress=True)
    train_expert(ExpertConfig(**base, out=str(tmp_path / "shared.pt"), vocab_from=reader), log=lambda *_: None)
    train_expert(ExpertConfig(**base, out=str(tmp_path / "own.pt")), log=lambda *_: None)
    source = codec.dictionary.symbols
    assert load_lip_reader(str(tmp_path / "shared.pt"), "").codec.dictionary.symbols == source
    assert load_lip_reader(str(tmp_path / "own.pt"), "").codec.dictionary.symbols != source
    with pytest.raises(TalkLipError, match="brings its own vocabulary"):
        train_expert(ExpertConfig(**base, out=str(tmp_path / "x.pt"), init=tiny_expert, vocab_from=tiny_expert),
                     log=lambda *_: None)


def test_the_lip_ensemble_is_the_lip_loss_of_training_and_validation(corpus, one_shard, tiny_expert, second_expert,
                                                                     tmp_path):
    """train.py --lip_ensemble: a stage-2 step's lip loss is the ensemble's (not the expert's alone) and so
    is the validation reading; L1 and the contrastive loss (the first expert's encoder) are unchanged."""
    def trainer(name, **kw):
        return Trainer(config(corpus, one_shard, tiny_expert, tmp_path / name, start_stage=2, lip_w=0.5, seed=3, **kw))
    single, ensemble = trainer("one"), trainer("two", lip_ensemble=(second_expert,))
    seen_one, seen_two = single.validate(), ensemble.validate()
    assert abs(seen_one["lip"] - seen_two["lip"]) > 1e-4 and seen_one["l1"] == seen_two["l1"]
    one = single.train_step(single.next_micro_batches()).logs
    two = ensemble.train_step(ensemble.next_micro_batches()).logs
    assert abs(one["lip"] - two["lip"]) > 1e-4
    assert one["l1"] == two["l1"] and one["cont"] == pytest.approx(two["cont"], rel=1e-6)
