"""Dubbing a face video with new speech, and the paper's test-set synthesis, with a TalkLip generator.

Layers, each importing only those below it: ``dub`` (the orchestrator, read top to bottom) ->
``follower`` (the face, followed ahead) and ``render`` (generate and paste) and ``speech`` (the audio
encoder's windows) -> ``source`` (which stream, decoded how) and ``options``. ``synthesis`` is the test
protocol beside ``dub``. The networks are in ``models``, the detector and tracker in ``face_detection``.
"""
from dubbing.dub import DubResult, dub
from dubbing.options import SynthesisOptions
from dubbing.synthesis import synthesize_test_clip

__all__ = ["DubResult", "SynthesisOptions", "dub", "synthesize_test_clip"]
