"""Inputs the benchmarks make for themselves: a random-weight generator and a speech-like signal."""
import dataclasses

import numpy as np
import soundfile
import torch


def random_generator(path: str, seed: int = 0) -> None:
    """A TalkLip generator at the cpu preset (tiny audio encoder), seeded, saved in the original .pth layout."""
    from models.presets import encoder_preset, talklip_preset
    from models.talklip import TalkLip
    torch.manual_seed(seed)
    model = TalkLip(encoder_preset("tiny"), talklip_preset("cpu"))
    torch.save({"state_dict": model.state_dict(), "optimizer": None, "global_step": 0, "global_epoch": 0,
                "talklip_cfg": model.config.to_dict(),
                "audio_encoder_cfg": dataclasses.asdict(model.audio_encoder.w2v_model.cfg)}, path)


def speech(path: str, seconds: float, pitch_hz: float = 220.0) -> None:
    """A tone at ``pitch_hz`` whose loudness swings 3 times a second, 16 kHz float WAV."""
    t = np.arange(int(seconds * 16000)) / 16000
    wave = 0.3 * np.sin(2 * np.pi * pitch_hz * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    soundfile.write(path, wave.astype(np.float32), 16000)
