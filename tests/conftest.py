import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # the suite runs in two worker processes (pytest -n 2, README): each gets one core's worth of threads,
    # for torch and for the processes the tests start, instead of both fighting over both cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    torch.set_num_threads(1)
SHARED_FIXTURES = os.path.join(ROOT, "..", "shared", "fixtures")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A 6-clip synthetic corpus, made once per test session."""
    from preparation.make_synthetic import make_corpus
    out = str(tmp_path_factory.mktemp("corpus"))
    splits = make_corpus(out, num_clips=6, seed=7, min_words=2, max_words=3)
    return out, splits


@pytest.fixture(scope="session", params=["espeak-ng", "built-in"])
def speech_corpus(request, tmp_path_factory):
    """The corpus of ``corpus`` made with each synthesiser, for tests whose bounds depend on the speech:
    the suite proves both wherever espeak-ng is installed (CI), and the built-in one everywhere."""
    from preparation.make_synthetic import make_corpus
    from preparation.speech import espeak_available
    if request.param == "espeak-ng" and not espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); the built-in synthesiser is tested")
    out = str(tmp_path_factory.mktemp(f"corpus-{request.param}"))
    splits = make_corpus(out, num_clips=6, seed=7, min_words=2, max_words=3,
                         use_espeak=request.param == "espeak-ng")
    return out, splits


class Collect:
    """Stands where the encoder would: keeps the frames ``render_into`` writes (``write_batch``)."""

    def __init__(self):
        self.frames = []

    def write_batch(self, frames):
        self.frames.extend(frames)


def run_module(module, *args, cwd=ROOT, timeout=300):
    """Run ``python -m module args`` like a user would; return the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def one_shard(corpus, tmp_path_factory):
    """Audio and boxes of the whole corpus from a single shard, through the module CLIs."""
    data, _ = corpus
    out = tmp_path_factory.mktemp("one_shard")
    common = ["--filelist", f"{data}/filelist.txt", "--video_root", f"{data}/main", "--nshard", 1]
    audio = run_module("preparation.audio_extract", *common, "--audio_root", out / "audio")
    boxes = run_module("preparation.bbx_extract", *common, "--bbx_root", out / "bbx")
    assert audio.returncode == 0, audio.stderr
    assert boxes.returncode == 0, boxes.stderr
    return out


@pytest.fixture(scope="session")
def talklip_checkpoint(tmp_path_factory):
    """A small TalkLip generator (the cpu preset, a tiny audio encoder) with random weights, saved
    in the original .pth layout with the widths train.py records; the paper's BASE shapes are
    tested on their own (test_talklip.py)."""
    import dataclasses
    import torch
    from models.presets import encoder_preset, talklip_preset
    from models.talklip import TalkLip
    torch.manual_seed(0)
    model = TalkLip(encoder_preset("tiny"), talklip_preset("cpu"))
    path = tmp_path_factory.mktemp("talklip") / "talklip_random.pth"
    torch.save({"state_dict": model.state_dict(), "optimizer": None, "global_step": 0, "global_epoch": 0,
                "talklip_cfg": model.config.to_dict(),
                "audio_encoder_cfg": dataclasses.asdict(model.audio_encoder.w2v_model.cfg)}, path)
    return str(path), model.eval()


@pytest.fixture(scope="session")
def codec_parts():
    """A sentencepiece model and fairseq symbol list over the synthetic corpus's words."""
    from tests.tiny_models import make_codec_parts
    return make_codec_parts()


@pytest.fixture(scope="session")
def seq2seq_checkpoint(tmp_path_factory, codec_parts):
    """A tiny AV-HuBERT lip reader saved as fairseq saves av_hubert_seq2seq, and the model itself."""
    from tests.tiny_models import write_seq2seq_checkpoint
    return write_seq2seq_checkpoint(str(tmp_path_factory.mktemp("ckpt") / "checkpoint_best.pt"), codec_parts)


@pytest.fixture(scope="session")
def synthesized_test(corpus, one_shard, talklip_checkpoint, tmp_path_factory):
    """inf_test.py's output for the corpus's test split, with a random generator."""
    data, splits = corpus
    out = tmp_path_factory.mktemp("synt")
    filelist = out / "test.txt"
    filelist.write_text("\n".join(splits["test"]) + "\n")
    proc = run_module("inf_test", "--filelist", filelist, "--video_root", f"{data}/main", "--audio_root",
                      one_shard / "audio", "--bbx_root", one_shard / "bbx", "--save_root", out / "synt",
                      "--ckpt_path", talklip_checkpoint[0], "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    return out / "synt"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (``item.rep_call``...), for fixtures that act on failure
    (the browser cases save a screenshot)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="module")
def tiny_expert(corpus, tmp_path_factory):
    """A tiny random expert over the corpus's transcripts, in the format train_expert.py writes."""
    import torch
    from training.expert import build_codec, new_model, save_expert
    from utils.corpus import read_transcript
    data, splits = corpus
    codec = build_codec([read_transcript(f"{data}/main", n).lower() for n in splits["train"]], 60)
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("expert") / "expert.pt")
    save_expert(new_model("tiny", len(codec.dictionary)), codec, path)
    return path
