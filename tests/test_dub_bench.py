"""bench/dub.py's stand-ins for S3FD: weights that cost what the real ones cost, and boxes replayed."""
import cv2
import numpy as np
import skimage.data
import torch

from bench.dub import S3FDCostCascadeBoxes, random_s3fd_weights
from face_detection import S3FD, S3FDDetector
from face_detection.s3fd import BGR_MEAN, decode_heads


def photo(side=192):
    return cv2.resize(np.ascontiguousarray(skimage.data.astronaut()[..., ::-1]), (side, side))[None]


def candidates(state, frames):
    detector = S3FDDetector(state)
    x = torch.from_numpy(np.ascontiguousarray(frames[..., ::-1])).permute(0, 3, 1, 2).float()
    x = x - torch.tensor(BGR_MEAN).view(1, 3, 1, 1)            # the input detect_faces gives the network
    with torch.no_grad():
        return len(decode_heads(detector.net(x), 0))


def test_the_bench_s3fd_weights_score_no_anchor_as_a_face_where_plain_random_ones_score_all():
    """The plain random network passes nearly every anchor of a 192x192 view as a candidate (what made
    post-processing cost 60-130 ms a call); the bench's weights, the same but the face logits' bias,
    pass none and find no face; every other tensor is torch's seeded default."""
    frames = photo()
    torch.manual_seed(0)
    plain = S3FD().state_dict()
    bench = random_s3fd_weights(0)
    anchors = sum((192 // s) ** 2 for s in (4, 8, 16, 32, 64, 128))
    assert candidates(plain, frames) > 0.9 * anchors
    assert candidates(bench, frames) == 0
    assert len(S3FDDetector(bench).detect_faces(frames)[0]) == 0
    differ = [k for k in plain if not torch.equal(plain[k], bench[k])]
    assert differ and all(k.endswith("_mbox_conf.bias") for k in differ)


def test_replayed_boxes_are_the_recorded_ones_and_a_new_view_is_a_miss():
    frames = [photo(), np.ascontiguousarray(photo()[:, :, ::-1])]
    recorded = {}
    recorder = S3FDCostCascadeBoxes("unused", with_s3fd=False, record=recorded)
    found = [recorder.detect_faces(f) for f in frames]
    assert len(recorded) == 2 and len(found[0][0]) >= 1         # the cascade finds the astronaut
    player = S3FDCostCascadeBoxes("unused", with_s3fd=False, replay=recorded)
    for f, boxes in zip(frames, found):
        for a, b in zip(player.detect_faces(f), boxes):
            np.testing.assert_array_equal(np.asarray(a, np.float64).reshape(-1, 5), np.asarray(b, np.float64).reshape(-1, 5))
    assert player.replay_misses == 0
    shifted = np.ascontiguousarray(np.roll(frames[0], 8, axis=2))
    player.detect_faces(shifted)
    assert player.replay_misses == 1
