"""Face detectors: the bundled fallback on a real photo, S3FD loading and post-processing."""
import os

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from face_detection import CascadeDetector, S3FD, S3FDDetector, build_detector, crop_face
from face_detection.tracking import KeyFrameDetector, TrackingOptions, boxes_for_video, track_faces
from utils.errors import CheckpointError, NoFaceError, TalkLipError

# The astronaut's face in skimage.data.astronaut(), labelled by hand: forehead to chin.
ASTRONAUT_FACE = (172, 62, 274, 178)


def iou(a, b):
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def astronaut_bgr():
    return np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])


def test_fallback_detector_finds_the_astronaut():
    photo = astronaut_bgr()
    blank = np.full_like(photo, 128)
    boxes = CascadeDetector().detect_batch(np.stack([photo, blank]))
    assert boxes[1] is None
    assert iou(boxes[0], ASTRONAUT_FACE) > 0.6


def test_build_detector_falls_back_and_says_so(tmp_path, monkeypatch):
    """Without --s3fd_path the default path is used when present, else the cascade, said in a line; a path
    given explicitly that does not exist is an error (it fell back to the cascade with only a log line)."""
    import face_detection
    monkeypatch.setattr(face_detection, "DEFAULT_S3FD_PATH", str(tmp_path / "default" / "s3fd.pth"))
    messages = []
    detector = build_detector(None, log=messages.append)
    assert isinstance(detector, CascadeDetector)
    assert "Haar cascade" in messages[0] and "default/s3fd.pth" in messages[0]
    with pytest.raises(CheckpointError, match="S3FD weights .*none.pth do not exist: check --s3fd_path"):
        build_detector(str(tmp_path / "none.pth"), log=messages.append)


# Key names and shapes of the original s3fd.pth, read off the original net_s3fd.py.
def original_s3fd_shapes():
    shapes = {}
    convs = [("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), ("conv2_1", 64, 128, 3),
             ("conv2_2", 128, 128, 3), ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3),
             ("conv3_3", 256, 256, 3), ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3),
             ("conv4_3", 512, 512, 3), ("conv5_1", 512, 512, 3), ("conv5_2", 512, 512, 3),
             ("conv5_3", 512, 512, 3), ("fc6", 512, 1024, 3), ("fc7", 1024, 1024, 1),
             ("conv6_1", 1024, 256, 1), ("conv6_2", 256, 512, 3), ("conv7_1", 512, 128, 1),
             ("conv7_2", 128, 256, 3),
             ("conv3_3_norm_mbox_conf", 256, 4, 3), ("conv3_3_norm_mbox_loc", 256, 4, 3),
             ("conv4_3_norm_mbox_conf", 512, 2, 3), ("conv4_3_norm_mbox_loc", 512, 4, 3),
             ("conv5_3_norm_mbox_conf", 512, 2, 3), ("conv5_3_norm_mbox_loc", 512, 4, 3),
             ("fc7_mbox_conf", 1024, 2, 3), ("fc7_mbox_loc", 1024, 4, 3),
             ("conv6_2_mbox_conf", 512, 2, 3), ("conv6_2_mbox_loc", 512, 4, 3),
             ("conv7_2_mbox_conf", 256, 2, 3), ("conv7_2_mbox_loc", 256, 4, 3)]
    for name, cin, cout, k in convs:
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        shapes[f"{name}.bias"] = (cout,)
    for name, channels in (("conv3_3_norm", 256), ("conv4_3_norm", 512), ("conv5_3_norm", 512)):
        shapes[f"{name}.weight"] = (channels,)
    return shapes


def random_s3fd_state(seed=0):
    torch.manual_seed(seed)
    net = S3FD()
    with torch.no_grad():   # spread the face logits so that some anchors pass 0.5
        for name, param in net.named_parameters():
            if name.endswith("mbox_conf.weight"):
                param.mul_(3)   # enough to pass 0.5, not so much that scores tie at 1.0
    return net.state_dict()


def test_s3fd_keys_match_the_original_file():
    ours = {k: tuple(v.shape) for k, v in S3FD().state_dict().items()}
    assert ours == original_s3fd_shapes()


def reference_first_faces(net, frames_bgr):
    """The original batch_detect -> detect_from_batch -> get_detections_for_batch, re-derived
    step by step: candidate anchors where any frame of the batch scores > 0.05, per-frame
    greedy NMS at IoU 0.3 with +1 areas, faces > 0.5, first kept, clipped at 0, int()."""
    imgs = frames_bgr[..., ::-1].astype(np.float64) - np.array([104, 117, 123])
    x = torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy()).float()
    with torch.no_grad():
        heads = net(x)
    batch = x.shape[0]
    rows = []
    for level, (cls, reg) in enumerate(heads):
        cls = F.softmax(cls, dim=1)
        stride = 2 ** (level + 2)
        for _, hi, wi in zip(*np.where(cls[:, 1].numpy() > 0.05)):
            prior = torch.tensor([stride / 2 + wi * stride, stride / 2 + hi * stride, stride * 4.0, stride * 4.0])
            loc = reg[:, :, hi, wi]
            centre = prior[:2] + loc[:, :2] * 0.1 * prior[2:]
            size = prior[2:] * torch.exp(loc[:, 2:] * 0.2)
            x1y1 = centre - size / 2
            rows.append(torch.cat([x1y1, x1y1 + size, cls[:, 1, hi, wi, None]], 1).numpy())
    dets = np.array(rows) if rows else np.zeros((1, batch, 5))
    results = []
    for i in range(batch):
        d = dets[:, i, :].astype(np.float64)
        order = list(np.argsort(d[:, 4])[::-1])
        keep = []
        while order:
            best = order.pop(0)
            keep.append(best)
            survivors = []
            for other in order:
                a, b = d[best], d[other]
                w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
                h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
                area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
                area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
                if w * h / (area_a + area_b - w * h) <= 0.3:
                    survivors.append(other)
            order = survivors
        faces = [d[k] for k in keep if d[k, 4] > 0.5]
        if not faces:
            results.append(None)
            continue
        x1, y1, x2, y2 = np.clip(faces[0][:4], 0, None)
        results.append((int(x1), int(y1), int(x2), int(y2)))
    return results


def test_s3fd_file_loads_strictly_and_detects_like_the_original(tmp_path):
    state = random_s3fd_state()
    path = tmp_path / "s3fd.pth"
    torch.save(state, path)                      # the original file is a plain state dict
    detector = S3FDDetector(str(path))
    photo = astronaut_bgr()
    frames = np.stack([photo[40:136, 150:278], photo[300:396, 0:128], photo[0:96, 384:512]])
    ours = detector.detect_batch(frames)
    assert ours == reference_first_faces(detector.net, frames)
    assert any(box is not None for box in ours)
    assert all(box is None or (len(box) == 4 and all(isinstance(v, int) and v >= 0 for v in box))
               for box in ours)


def test_s3fd_accepts_wrapper_prefixes_and_refuses_wrong_keys(tmp_path):
    state = random_s3fd_state()
    S3FDDetector({f"module.{k}": v for k, v in state.items()})
    broken = dict(state)
    broken["extra_head.weight"] = broken.pop("fc7_mbox_conf.weight")
    torch.save(broken, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as err:
        S3FDDetector(str(tmp_path / "bad.pth"))
    message = str(err.value)
    assert "bad.pth" in message and "fc7_mbox_conf.weight" in message and "extra_head.weight" in message
    assert "\n" not in message
    with pytest.raises(CheckpointError, match="nothere.pth"):
        S3FDDetector(str(tmp_path / "nothere.pth"))


class ScriptedDetector:
    """A detector whose answer for frame i is ``table[i]`` (a list of boxes); frames carry their
    index in pixel (0, 0). Counts the frames it was asked about."""

    def __init__(self, table):
        self.table, self.asked = table, []

    def detect_faces(self, frames):
        out = []
        for frame in frames:
            index = int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])
            self.asked.append(index)
            out.append(np.array([list(b) + [1.0] for b in self.table[index]], np.float64).reshape(-1, 5))
        return out


def indexed_frames(count, height=480, width=800):
    """Uniform frames whose every pixel carries the frame's index (no memory: each is a broadcast view),
    large enough that the scripted boxes lie on them (boxes are clipped to the frame)."""
    pixels = np.zeros((count, 3), np.uint8)
    pixels[:, 0], pixels[:, 1] = np.arange(count) % 256, np.arange(count) // 256
    return [np.broadcast_to(pixel, (height, width, 3)) for pixel in pixels]


def tracked(table, **options):
    detector = ScriptedDetector(table)
    opts = TrackingOptions(**{"detect_max_side": 0, "smooth_window": 1, "face_px": 0, **options})   # scripted: scale-blind
    boxes = [box for _, box in track_faces(iter(indexed_frames(len(table))), detector, opts, fps=25)]
    return boxes, sorted(set(detector.asked))


def moving(start, count, step=2):
    return [[(start + step * k, 20, start + step * k + 100, 120)] for k in range(count)]


def test_every_frame_mode_returns_the_detectors_boxes():
    rng = np.random.default_rng(0)
    table = [[tuple(int(v) for v in (10 + rng.integers(0, 5), 10, 50, 50 + rng.integers(0, 5)))] for _ in range(30)]
    boxes, asked = tracked(table, detect_every=1)
    assert asked == list(range(30))
    np.testing.assert_array_equal(np.stack(boxes), np.array([t[0] for t in table]))


def test_key_frames_interpolate_and_bisection_finds_a_cut_exactly():
    table = moving(0, 37) + moving(300, 43)           # a cut at frame 37 to a face elsewhere
    boxes, asked = tracked(table, detect_every=8, max_gap_s=0)
    truth = np.array([t[0] for t in table])
    np.testing.assert_array_equal(np.stack(boxes), truth)   # linear motion: interpolation is exact
    assert len(asked) <= 80 // 8 + 1 + 2 * 3             # key frames + about log2(8) per side of the cut
    assert {36, 37} <= set(asked)                         # both sides of the cut were looked at


def test_short_gaps_are_filled_and_long_ones_left_without_a_box():
    table = moving(0, 60)
    for k in list(range(10, 14)) + list(range(30, 45)):  # a 4-frame and a 15-frame gap
        table[k] = []
    boxes, _ = tracked(table, detect_every=1, max_gap_s=0.2)     # 5 frames at 25 fps
    truth = [t[0] for t in moving(0, 60)]
    for k in range(10, 14):
        np.testing.assert_array_equal(boxes[k], truth[k])
    assert all(boxes[k] is None for k in range(30, 45))
    assert boxes[29] is not None and boxes[45] is not None
    filled, _ = tracked(table, detect_every=1, max_gap_s=None)   # preprocessing fills every gap
    np.testing.assert_array_equal(np.stack(filled), np.stack(truth))


def test_streaming_smoothing_equals_a_moving_average_per_shot():
    rng = np.random.default_rng(1)
    jitter = [[(10 + int(rng.integers(-3, 4)), 20, 50 + int(rng.integers(-3, 4)), 60)] for _ in range(23)]
    table = jitter + [[] for _ in range(10)] + [[(200, 20, 240, 60)]] * 7
    boxes, _ = tracked(table, detect_every=1, smooth_window=5, max_gap_s=0.1)

    def reference(run):                                   # edge-padded centred average, independently
        padded = np.pad(np.asarray(run, np.float64), ((2, 2), (0, 0)), mode="edge")
        return np.round(np.stack([padded[k:k + 5].mean(axis=0) for k in range(len(run))])).astype(np.int64)

    np.testing.assert_array_equal(np.stack(boxes[:23]), reference([t[0] for t in jitter]))
    assert all(b is None for b in boxes[23:33])
    np.testing.assert_array_equal(np.stack(boxes[33:]), np.tile([200, 20, 240, 60], (7, 1)))


def test_the_followed_face_is_kept_while_another_is_visible():
    small, large = moving(0, 40), [(300, 0, 450, 150)]
    table = [s + large for s in small]
    for k in (17, 18, 19):                               # the followed face missed for 3 frames
        table[k] = large
    boxes, _ = tracked(table, detect_every=4, follow=(20, 40), max_gap_s=0.2)
    assert all(b is not None and b[0] < 200 for b in boxes)
    boxes, _ = tracked(table, detect_every=4, max_gap_s=0.2)    # 'largest' follows the other one
    assert all(b[0] == 300 for b in boxes)


def test_detection_on_a_scaled_copy_maps_boxes_back():
    photo = astronaut_bgr()
    big = cv2.resize(photo, (1024, 1024))
    full = KeyFrameDetector(CascadeDetector(), 0)([big])[0][0]
    small = KeyFrameDetector(CascadeDetector(), 512)([big])[0][0]
    assert iou(full, small) > 0.9
    assert iou(small, np.array(ASTRONAUT_FACE) * 2) > 0.5


def test_s3fd_frees_its_largest_maps_before_the_next_block():
    """conv1_2's and conv2_2's outputs (at full and half resolution: 59 + 29 MB for a 640x360 view)
    are gone once the next block runs; only the maps the heads read are kept. Measured: a 640x360
    detection's peak over the resident set 119 MB, against 177-196 MB when every block's map was kept."""
    import weakref
    net = S3FD().eval()
    maps, alive_at = {}, {}
    for name in ("conv1_2", "conv2_2", "conv3_3"):
        getattr(net, name).register_forward_hook(lambda m, i, out, name=name: maps.__setitem__(name, weakref.ref(out)))
    for name, before in (("conv3_1", "conv2_2"), ("conv4_1", "conv3_3")):
        getattr(net, name).register_forward_hook(
            lambda m, i, out, before=before: alive_at.__setitem__(before, maps[before]() is not None))
    with torch.no_grad():
        net(torch.rand(1, 3, 64, 96))
    assert alive_at == {"conv2_2": False, "conv3_3": True}
    assert maps["conv1_2"]() is None


def test_a_wandering_face_size_gives_the_detector_few_frame_sizes():
    """The face-scale copy is rounded up to a ladder of scales: a face whose size drifts from 180 to
    260 px (every size in between) is detected on a handful of frame sizes, each showing it at
    face_px to 9% more. (Each new size costs torch's CPU convolutions ~1 MB kept for the process:
    a size per key frame climbed 90 MB over a 300 s dub.)"""
    class Sizes:
        def __init__(self):
            self.seen = []

        def detect_faces(self, frames):
            self.seen.append(frames.shape[1:3])
            return [[] for _ in frames]

    sizes = Sizes()
    detect = KeyFrameDetector(sizes, 640)
    view = detect.view(np.zeros((720, 1280, 3), np.uint8))                  # 640x360: back = 2
    for side in range(180, 261):
        detect.detect_views([view], face_side=side, face_px=64)
        scale = sizes.seen[-1][1] / view.shape[1]
        assert 64 <= scale * side / 2 <= 64 * 2 ** (1 / 8) + 1, (side, sizes.seen[-1])
    assert len(set(sizes.seen)) <= 6, sorted(set(sizes.seen))


def test_preprocessing_boxes_refuse_a_video_without_a_face(tmp_path):
    from utils.video import VideoWriter
    path = str(tmp_path / "blank.mp4")
    with VideoWriter(path, 25, 64, 64) as writer:
        for _ in range(5):
            writer.write(np.full((64, 64, 3), 128, np.uint8))
    with pytest.raises(NoFaceError, match="blank.mp4"):
        boxes_for_video(path, CascadeDetector(), TrackingOptions())


def test_crop_face_clips_boxes_to_the_frame():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[50:, 150:] = 255
    crop = crop_face(frame, (150, 50, 260, 140), size=32)   # extends past both edges
    assert crop.shape == (32, 32, 3) and crop.min() == 255


def test_a_follow_point_must_be_finite_and_on_the_frame_and_a_far_pick_is_counted():
    """--follow nan,1 / inf / garbage are refused in one line; a point off the frame is refused with the frame's
    size; a face chosen by the point although none lies near it (the one there missed) is counted, so the
    dub can say so."""
    from face_detection.tracking import FaceTracker, check_follow_point, parse_follow
    for text in ("nan,10", "10,inf", "-inf,3"):
        with pytest.raises(TalkLipError, match="finite pixel coordinates"):
            parse_follow(text)
    assert parse_follow("12.5,40") == (12.5, 40.0)
    check_follow_point((0, 359), 640, 360, "clip.mp4")
    for point in ((640, 10), (-1, 10), (10, 360)):
        with pytest.raises(TalkLipError, match=r"outside the 640x360 frame of clip.mp4"):
            check_follow_point(point, 640, 360, "clip.mp4")
    table = [[(300, 0, 450, 150)]] * 8
    for point, far in (((20, 300), 1), ((380, 60), 0), ((470, 160), 0)):
        tracker = FaceTracker(ScriptedDetector(table), TrackingOptions(detect_every=4, smooth_window=1, face_px=0,
                                                                       detect_max_side=0, follow=point), fps=25)
        for frame in indexed_frames(len(table)):
            tracker.push(frame)
        tracker.finish()
        assert tracker.far_from_point == far, point


def test_a_box_larger_than_the_frame_never_shrinks_the_view_below_s3fd_s_smallest_input():
    """S3FD at random weights returns boxes larger than the frame; following such a face at its own scale
    once shrank the next view below what S3FD can take (a traceback from its max_pool2d). Boxes are now
    clipped to the frame, the scale floored at S3FD's smallest side, and a detector error is one line."""
    from face_detection.tracking import MIN_DETECT_SIDE
    torch.manual_seed(0)
    s3fd = S3FDDetector(S3FD().state_dict(), device="cpu")          # random weights
    frame = np.random.default_rng(0).integers(0, 255, (360, 640, 3), dtype=np.uint8)
    detect = KeyFrameDetector(s3fd, 640)
    view = detect.view(frame)
    for face_side in (360.0, 5000.0, 1e6):          # a face as large as the frame, or (wrongly) far larger
        boxes = detect.detect_views([view], face_side=face_side, face_px=64)[0]
        assert (boxes[:, [0, 2]] <= 640).all() and (boxes[:, [1, 3]] <= 360).all()
    assert MIN_DETECT_SIDE == 32

    class Failing:
        def detect_faces(self, frames):
            raise RuntimeError("max_pool2d: Given input size: (512x1x2). Calculated output size: (512x0x1)")
    with pytest.raises(TalkLipError, match=r"^the face detector failed on a \d+x\d+ view of the frame \(RuntimeError: max_pool2d"):
        KeyFrameDetector(Failing(), 640).detect_views([view])


LRS2_SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                            "lrs2_samples", "main", "demo")


@pytest.mark.skipif(not os.path.isdir(LRS2_SAMPLES), reason="../shared/data/lrs2_samples is not here")
def test_the_cascade_finds_faces_that_fill_the_frame():
    """LRS2's face-centred 160-px frames put the forehead at the edge, where no cascade window fits: the plain
    cascade found the face of clip 00004 on 21 of its 138 frames (9 of every third frame's 46); searched again
    inside a border, on 78 (28 of the 46)."""
    from utils.video import VideoReader
    with VideoReader(os.path.join(LRS2_SAMPLES, "00004.mp4")) as reader:
        frames = np.stack(list(reader)[::3])
    found = CascadeDetector().detect_faces(frames)
    assert sum(len(f) > 0 for f in found) >= 23, sum(len(f) > 0 for f in found)
    for faces in found:                       # boxes stay on the frame
        assert np.all(faces[:, :2] >= 0) and np.all(faces[:, 2] <= 160) and np.all(faces[:, 3] <= 160)


@pytest.mark.parametrize("face_px", [200, 260])
def test_the_cascade_finds_a_small_face_in_a_4k_frame(face_px):
    """A face of 200-260 px in a 3840 x 2160 frame is 33-43 px in the 640-px view the tracker detects on, below the
    eighth of the view's height the cascade's first search takes: a frame without a larger face is searched for
    smaller ones (before, none was found)."""
    scale = face_px / (ASTRONAUT_FACE[2] - ASTRONAUT_FACE[0])
    tile = cv2.resize(astronaut_bgr(), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = cv2.resize(np.ascontiguousarray(skimage.data.coffee()[..., ::-1]), (3840, 2160))
    y, x = 2160 - tile.shape[0] - 10, 2500 - tile.shape[1] // 2
    frame[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
    truth = np.array([x, y, x, y]) + np.array(ASTRONAUT_FACE) * scale
    found = KeyFrameDetector(CascadeDetector(), 640)([frame])[0]
    assert len(found) == 1 and iou(found[0], truth) > 0.7, (found, truth)


GRID_S1 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "grid",
                       "s1")


def coffee_4k():
    return cv2.resize(np.ascontiguousarray(skimage.data.coffee()[..., ::-1]), (3840, 2160))


def face_source(source):
    """A picture with a face and its box: the astronaut (labelled by hand), or a GRID frame (the cascade's box on
    it at its own size, where the fallback has always found it)."""
    if source == "astronaut":
        return astronaut_bgr(), np.array(ASTRONAUT_FACE, np.float64)
    if not os.path.isdir(GRID_S1):
        pytest.skip("../shared/data/grid is not here")
    from utils.video import VideoReader
    with VideoReader(os.path.join(GRID_S1, sorted(os.listdir(GRID_S1))[0])) as reader:
        frame = next(iter(reader))
    return frame, CascadeDetector().detect_faces(frame[None])[0][0, :4]


@pytest.mark.parametrize("source,face_px", [("astronaut", 70), ("astronaut", 120), ("grid", 80)])
def test_a_face_too_small_for_the_view_is_found_on_the_frame_and_followed(source, face_px):
    """A face of 70-120 px in a 4K frame is 12-20 px in the 640-px view, below the 24 px the cascade finds: before,
    no frame of such a clip had a face. A frame whose view shows none is searched at its own size (confirmed by a
    second cascade and an eye), and once a face is found the views are made large enough to follow it."""
    picture, box = face_source(source)
    scale = face_px / (box[2] - box[0])
    tile = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    background, truths = coffee_4k(), []

    def frames():
        for i in range(12):                  # moving 2 px right and 1 px up per frame
            frame = background.copy()
            y, x = 1500 - i, 1200 + 2 * i
            frame[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
            truths.append(np.array([x, y, x, y]) + box * scale)
            yield frame

    detect = KeyFrameDetector(CascadeDetector(), 640)
    found = [face.box for face in track_faces(frames(), detect, TrackingOptions(), 25.0)]
    assert len(found) == 12 and all(b is not None for b in found), found
    overlaps = [iou(b, t) for b, t in zip(found, truths)]
    assert min(overlaps) > 0.6, overlaps             # the Haar box reaches down to the chin: not 1.0 on a face
    assert detect.probes == 1 and detect.max_side > 640


def test_small_face_candidates_on_a_picture_without_a_face_are_refused():
    """The first cascade takes a spoon and two patches of scikit-image's coffee picture at 4K for faces of 50-160 px
    (the finer search for small faces would dub the spoon); the confirmation refuses them all, and a clip of that
    picture is searched so at most once per PROBE_GAP frames."""
    from face_detection.tracking import PROBE_GAP
    frame, detector = coffee_4k(), CascadeDetector()
    grey = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    candidates = detector.cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24),
                                                   maxSize=(216, 216))
    assert len(candidates) >= 2
    assert len(detector.find_small_faces(frame, 216)) == 0
    detect = KeyFrameDetector(detector, 640)
    found = [face.box for face in track_faces([frame] * 30, detect, TrackingOptions(), 25.0)]
    assert found == [None] * 30
    assert 1 <= detect.probes <= 1 + 30 // PROBE_GAP and detect.max_side == 640
