"""Detection with the real RetinaFace weights on the shared photos.

Expected counts are the truth written in testdata/SOURCES.md (what is really in each picture), not this detector's
output; where RetinaFace-MobileNet honestly misses faces, the test says so (a documented tolerance or a strict xfail).
Every image is detected once for the whole module (the `found` fixture).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from faceqc_gui.engine import detect as detect_mod
from faceqc_gui.engine.detect import FaceDetector
from faceqc_gui.engine.errors import ModelLoadError
from faceqc_gui.engine.imageio import load_rgb

FOLDERS = ("faces/real", "faces/synthetic", "nonfaces")


@pytest.fixture(scope="module")
def detector(retinaface_weights):
    # One intra-op thread for this module: ~50 forward passes of many sizes; on a shared 2-core runner two spinning
    # OpenMP threads per process made the module 3-5x slower, one thread costs ~1.5x when the cores are free.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield FaceDetector(retinaface_weights, device="cpu")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def found(detector, testdata):
    """name -> (image shape, detections); each shared image decoded and detected exactly once."""
    out = {}
    for folder in FOLDERS:
        for p in sorted((testdata / folder).iterdir()):
            rgb = load_rgb(p)
            out[p.name] = (rgb.shape, detector.detect(rgb))
    return out


def n(found, name):
    return len(found[name][1])


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_every_face_photo_has_a_face(found, testdata):
    for folder in ("faces/real", "faces/synthetic"):
        for p in (testdata / folder).iterdir():
            assert n(found, p.name) >= 1, p.name


@pytest.mark.parametrize("name", [
    # big faces: at full resolution these get 2-6 boxes on parts of the face (SOURCES.md / MODELS.md section 9)
    "singnet_woman_portrait.jpg", "singnet_model_face.jpg", "sfhq_pt1_00001878.jpg", "sfhq_pt2_00001399.jpg",
    "sfhq_pt1_00000161.jpg", "sfhq_pt1_00002875.jpg", "sfhq_pt2_00001286.jpg", "sfhq_pt2_00001593.jpg",
    "sfhq_pt2_00001843.jpg", "sfhq_pt2_00002324.jpg", "sfhq_pt2_00003040.jpg", "sfhq_pt2_00003124.jpg",
    "ipadapter_ai_face.png", "ipadapter_ai_face2.png", "singnet_city_portrait.jpg",
    # small faces in large frames, tiny images, grey, occluded, partial
    "face_recognition_biden.jpg", "max_Bryan.png", "skimage_astronaut.png", "skimage_camera.png",
    "face_recognition_obama_partial_face.jpg", "face_recognition_obama_small.jpg",
    "singnet_benedict_cumberbatch_2014.png",
    "bsplus_ringo.jpg", "singnet_waaah.jpg", "max_Chris.jpeg", "max_Luciano.png",
])
def test_single_face_images_give_exactly_one_box(found, name):
    assert n(found, name) == 1


def test_group_photos_find_their_people(found):
    assert 28 <= n(found, "epfl_solvay-conference-1927.jpg") <= 30  # 29 people; 19 at 640 px alone
    assert n(found, "dlib_2008_007676.jpg") == 7
    assert n(found, "sfhq_sample_2x4_grid.jpg") == 8
    assert n(found, "sfhq_sample_1x2_grid.jpg") == 2  # 6-11 boxes at full resolution
    assert n(found, "pexels_women-on-phones.jpg") == 2  # the small out-of-focus woman at the back is lost at 640
    assert n(found, "singnet_laos.jpg") == 2
    assert n(found, "bsplus_john.jpg") == 2  # Lennon + a face cut by the top-left border
    # 4 people (one half hidden behind Obama) + the painted portrait on the wall, which is a face; the false
    # positive on Hawking's lap that a full-resolution run gives must not come back.
    assert n(found, "epfl_stephen-hawking.jpg") == 5
    # Honest misses of RetinaFace-MobileNet on RGB input (facer's convention), documented tolerances:
    assert 6 <= n(found, "dlib_2007_007763.jpg") <= 7  # 7 small faces (27-50 px); one is missed
    assert 4 <= n(found, "dlib_2008_002079.jpg") <= 8  # ~6-8 faces, several near-profile; 4 are found
    assert 13 <= n(found, "singnet_classroom_in_tanzania.jpg") <= 20  # ~19 girls, back rows occluded; ~15 found


@pytest.mark.xfail(strict=True, reason="with facer's RGB input (the net was trained on BGR) RetinaFace-MobileNet "
                                       "misses ~4 of the ~19 small, occluded faces in the back rows; BGR finds 19")
def test_every_girl_in_the_classroom_photo_is_found(found):
    assert n(found, "singnet_classroom_in_tanzania.jpg") >= 18


@pytest.mark.xfail(strict=True, reason="turned / near-profile small faces at the restaurant table are missed with "
                                       "facer's RGB input (4 of ~6-8 found; BGR input finds 6)")
def test_every_face_at_the_restaurant_table_is_found(found):
    assert n(found, "dlib_2008_002079.jpg") >= 6


def test_nonfaces_have_no_face_except_the_humanoid_robot(found, testdata):
    for p in (testdata / "nonfaces").iterdir():
        if p.name == "hard_robot_singnet_sophia.jpg":
            # Sophia has a realistic human-like face: the detector honestly fires on it (SOURCES.md); nothing
            # downstream can tell a robot from a person.
            assert n(found, p.name) == 1
        else:
            assert n(found, p.name) == 0, p.name


def test_astronaut_box_is_in_original_pixels(found):
    shape, dets = found["skimage_astronaut.png"]
    x1, y1, x2, y2 = dets[0].box
    assert 80 <= x2 - x1 <= 110 and 105 <= y2 - y1 <= 135  # SOURCES.md: about 92x119 px
    assert 0 <= x1 < x2 <= shape[1] and 0 <= y1 < y2 <= shape[0]


def test_landmarks_lie_in_their_box_and_boxes_in_the_image(found):
    for name, (shape, dets) in found.items():
        for d in dets:
            b, lm = d.box, d.landmarks
            assert d.box.dtype == np.float32 and lm.shape == (5, 2), name
            margin = 0.1 * (b[2] - b[0])
            assert (lm[:, 0] > b[0] - margin).all() and (lm[:, 0] < b[2] + margin).all(), name
            assert (lm[:, 1] > b[1] - margin).all() and (lm[:, 1] < b[3] + margin).all(), name
            # Boxes are not clipped, but a face can only stick out of the frame by a fraction of itself.
            assert b[0] > -0.5 * (b[2] - b[0]) and b[2] < shape[1] + 0.5 * (b[2] - b[0]), name
            assert b[1] > -0.5 * (b[3] - b[1]) and b[3] < shape[0] + 0.5 * (b[3] - b[1]), name
        scores = [d.score for d in dets]
        assert scores == sorted(scores, reverse=True) and all(s > 0.8 for s in scores), name


def test_frontal_faces_have_eyes_above_mouth_in_image_order(found):
    for name in ("skimage_astronaut.png", "singnet_elon_musk_2015.jpg", "sfhq_pt2_00001399.jpg", "max_Luciano.png"):
        lm = found[name][1][0].landmarks
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0], name  # image-left eye / mouth corner first
        assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min(), name  # eyes, then nose, then mouth


def _sfhq_crops(testdata):
    """(crop name, (x0, y0), grid name) for the SFHQ crops, from the crop boxes SOURCES.md records."""
    text = (testdata / "SOURCES.md").read_text(encoding="utf-8")
    rows = re.findall(r"`faces/synthetic/(sfhq_pt\d_\d+\.jpg)`.*?crop box \(x0,y0,x1,y1\)=\((\d+), (\d+), \d+, \d+\) "
                      r"of images/SFHQ_sample_(\dx\d)\.jpg", text)
    assert len(rows) == 10
    return [(name, (int(x0), int(y0)), f"sfhq_sample_{grid}_grid.jpg") for name, x0, y0, grid in rows]


def test_crops_and_their_contact_sheet_give_the_same_face_in_original_pixels(found, testdata):
    # The grid (3664x1951) and the crop (894 or 1799 px) are shrunk by different factors; mapped back, the same face
    # must land on the same pixels once shifted by the crop offset.
    for crop, (x0, y0), grid in _sfhq_crops(testdata):
        d = found[crop][1][0]
        box = d.box + np.array([x0, y0, x0, y0], np.float32)
        lm = d.landmarks + np.array([x0, y0], np.float32)
        twin = max(found[grid][1], key=lambda g: _iou(box, g.box))
        assert _iou(box, twin.box) > 0.75, crop
        width = box[2] - box[0]
        assert np.linalg.norm(lm - twin.landmarks, axis=1).max() < 0.12 * width, crop


def test_profile_face_is_found(found):
    # facer_sideface is a full profile. RetinaFace finds it once; its five points are guesses for the hidden half
    # (they bunch towards the visible side), so alignment of such faces is rough and their quality should be low.
    shape, dets = found["facer_sideface.jpg"]
    assert len(dets) == 1
    d = dets[0]
    assert 0 <= d.box[0] < d.box[2] <= shape[1] * 1.05


def test_small_images_give_exactly_what_facer_gives(found, retinaface_weights, testdata, monkeypatch):
    # At <= 640 px there is one pass at full size: the result must be facer's own detector's (RGB input, 0.8, NMS).
    from faceqc_gui.engine.imports import import_preserving_qt_env

    facer = import_preserving_qt_env("facer")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # facer sets it globally
    ref_detector = facer.face_detector("retinaface/mobilenet", "cpu", model_path=str(retinaface_weights), threshold=0.8)
    for name in ("dlib_2007_007763.jpg", "skimage_astronaut.png", "max_Bryan.png", "hard_robot_singnet_sophia.jpg"):
        path = next(p for folder in FOLDERS for p in (testdata / folder).glob(name))
        with torch.inference_mode():
            ref = ref_detector(facer.hwc2bchw(torch.from_numpy(load_rgb(path))))
        ours = found[name][1]
        assert len(ours) == len(ref["scores"]) > 0, name
        order = np.argsort(-ref["scores"].numpy(), kind="stable")
        np.testing.assert_allclose(np.stack([d.box for d in ours]), ref["rects"].numpy()[order], atol=1e-3)
        np.testing.assert_allclose(np.stack([d.landmarks for d in ours]), ref["points"].numpy()[order], atol=1e-3)
        np.testing.assert_allclose([d.score for d in ours], ref["scores"].numpy()[order], atol=1e-6)


@pytest.mark.parametrize("size", [(640, 640), (457, 640), (640, 427), (1482, 2048), (1, 1), (33, 17)])
def test_cached_anchors_equal_facers_element_for_element(size):
    rf = detect_mod._retinaface_module()
    ref = rf.PriorBox(rf.cfg_mnet, image_size=size).generate_anchors(device="cpu")
    ours = detect_mod._priors_cpu(*size)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    assert torch.equal(ours, ref)


def test_batch_detect_equals_facers_on_a_two_image_batch_at_pass_b_size(detector, testdata):
    # The large pass runs facer's post-processing on our cached anchors: same rects, points, scores and image ids.
    rf = detect_mod._retinaface_module()
    rgb = load_rgb(testdata / "faces/real" / "skimage_astronaut.png")
    big = detect_mod._resize(np.ascontiguousarray(np.pad(rgb, ((0, 300), (0, 500), (0, 0)))), 1200)
    x = torch.from_numpy(np.stack([big, big[:, ::-1].copy()])).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        ref = rf.batch_detect(detector.net, x.clone(), threshold=0.8)
        ours = detect_mod.batch_detect(detector.net, x, threshold=0.8)
    assert ours["rects"].shape[0] == ref["rects"].shape[0] >= 2
    for key in ("rects", "points", "scores", "image_ids"):
        assert torch.equal(ours[key].float(), ref[key].float()), key


def test_detect_batch_equals_detect_and_keeps_order(detector, found, testdata):
    names = ["sfhq_pt2_00003124.jpg", "skimage_astronaut.png", "sfhq_pt2_00001593.jpg", "sfhq_pt1_00000161.jpg",
             "skimage_coffee.png"]
    paths = {p.name: p for folder in FOLDERS for p in (testdata / folder).iterdir()}
    batched = detector.detect_batch([load_rgb(paths[x]) for x in names])
    assert len(batched) == len(names)
    for name, dets in zip(names, batched):
        single = found[name][1]
        assert len(dets) == len(single), name
        for a, b in zip(dets, single):
            np.testing.assert_allclose(a.box, b.box, atol=0.5)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.5)
            assert abs(a.score - b.score) < 1e-3


def test_grey_and_rgba_inputs_detect_like_rgb(detector, found, testdata):
    rgb = load_rgb(testdata / "faces" / "real" / "skimage_astronaut.png")
    ref = found["skimage_astronaut.png"][1]
    rgba = detector.detect(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]))
    assert len(rgba) == 1 and np.allclose(rgba[0].box, ref[0].box)
    grey = rgb.mean(axis=2).astype(np.uint8)
    as_2d, as_3 = detector.detect(grey), detector.detect(np.repeat(grey[:, :, None], 3, axis=2))
    assert len(as_2d) == len(as_3) == 1 and np.allclose(as_2d[0].box, as_3[0].box)
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        detector.detect(np.zeros((4, 4, 2), np.uint8))


def test_empty_and_tiny_images(detector):
    assert detector.detect(np.zeros((8, 8, 3), np.uint8)) == []
    assert detector.detect(np.full((1, 300, 3), 128, np.uint8)) == []
    assert detector.detect(np.zeros((0, 0, 3), np.uint8)) == []
    assert detector.detect(np.zeros((3000, 1, 3), np.uint8)) == []  # both passes, degenerate shape
    assert detector.detect_batch([]) == []


def test_detector_file_info_identifies_the_official_weights(detector):
    assert detector.file_info["sha256"].startswith("2979b33f") and detector.file_info["official"] is True


def test_loading_touches_no_network_and_no_global_cudnn_setting(retinaface_weights, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the detector tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    FaceDetector(retinaface_weights)
    assert torch.backends.cudnn.benchmark is False  # facer's load_net would set it for the whole process


def test_loading_facer_leaves_the_qt_variables_alone(retinaface_weights):
    # facer imports cv2, which points QT_QPA_PLATFORM_PLUGIN_PATH at OpenCV's Qt plugins (breaks the PySide6 GUI).
    code = (
        "import os, sys, numpy as np\n"
        "from faceqc_gui.engine.detect import FaceDetector\n"
        "assert 'facer' not in sys.modules, 'facer imported at module import'\n"
        f"FaceDetector({str(retinaface_weights)!r}).detect(np.zeros((32, 32, 3), np.uint8))\n"
        "assert 'cv2' in sys.modules\n"
        "print(os.environ.get('QT_QPA_PLATFORM_PLUGIN_PATH'), os.environ.get('QT_QPA_FONTDIR'))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_QPA_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "None"]


def test_wrong_or_corrupt_weight_files_fail_clearly(tmp_path, retinaface_weights, monkeypatch):
    truncated = tmp_path / "mobilenet0.25_Final.pth"
    truncated.write_bytes(retinaface_weights.read_bytes()[:50_000])
    with pytest.raises(ModelLoadError, match="not a readable RetinaFace checkpoint"):
        FaceDetector(truncated)
    text = tmp_path / "text.pth"
    text.write_text("hello")
    with pytest.raises(ModelLoadError, match="not a readable"):
        FaceDetector(text)

    sd = torch.load(retinaface_weights, map_location="cpu", weights_only=True)
    renamed = {k.replace("ClassHead", "ClsHead"): v for k, v in sd.items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(ModelLoadError, match="missing keys: 6"):  # facer would load it, heads left random
        FaceDetector(tmp_path / "renamed.pth")
    one_missing = dict(sd)
    one_missing.pop("LandmarkHead.2.conv1x1.bias")
    torch.save(one_missing, tmp_path / "one_missing.pth")
    with pytest.raises(ModelLoadError, match="missing keys: 1"):
        FaceDetector(tmp_path / "one_missing.pth")
    # Another anchor layout (3 anchors per cell instead of 2): same names, other head shapes.
    other = {k: (torch.zeros((3 * v.shape[0] // 2,) + tuple(v.shape[1:])) if k.startswith("ClassHead") else v)
             for k, v in sd.items()}
    torch.save(other, tmp_path / "other_anchors.pth")
    with pytest.raises(ModelLoadError, match="wrong shapes"):
        FaceDetector(tmp_path / "other_anchors.pth")
    torch.save({"epoch": 3, "optimizer": {}}, tmp_path / "no_weights.pth")
    with pytest.raises(ModelLoadError):
        FaceDetector(tmp_path / "no_weights.pth")

    # The DataParallel prefix, as biubug6's other files carry it, loads (stripped like the official loader) and is
    # reported as not the official file.
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "dp.pth")
    assert FaceDetector(tmp_path / "dp.pth").file_info["official"] is False

    # A file known to be another training with identical layers is refused by checksum.
    resaved = tmp_path / "same_layers_other_training.pth"
    torch.save(sd, resaved)
    from faceqc_gui.engine.hashing import sha256_file

    monkeypatch.setitem(detect_mod.INCOMPATIBLE_SHA256, sha256_file(resaved), "a test stand-in for another training")
    with pytest.raises(ModelLoadError, match="another training"):
        FaceDetector(resaved)


def test_fast_mode_skips_the_costly_large_pass_on_portrait_like_images(retinaface_weights, testdata, monkeypatch):
    det = FaceDetector(retinaface_weights, fast=True)
    passes = []
    real_pass = det._pass
    monkeypatch.setattr(det, "_pass", lambda images, long_side: passes.append(long_side) or real_pass(images, long_side))
    big = load_rgb(testdata / "faces" / "synthetic" / "sfhq_pt2_00003040.jpg")  # one 650-px face in 894 px
    assert len(det.detect(big)) == 1 and passes == [640]
    passes.clear()
    group = load_rgb(testdata / "faces" / "real" / "pexels_women-on-phones.jpg")  # a small face behind a big one
    assert len(det.detect(group)) == 2 and passes == [640, 2048]


def test_a_small_bystander_beside_a_big_synthetic_face_is_found_by_default(retinaface_weights, testdata):
    # One big face (971 px in 1799 px) plus a ~54 px face pasted in a corner: pass A (640 px) cannot see the small
    # one, so only the large pass finds it. The default detector runs it; the opt-in fast mode skips it (documented).
    from PIL import Image

    big = load_rgb(testdata / "faces" / "synthetic" / "sfhq_pt1_00001878.jpg")
    src = load_rgb(testdata / "faces" / "real" / "face_recognition_obama_small.jpg")  # 320x240, face ~108 px
    small = np.asarray(Image.fromarray(src).resize((160, 120), Image.BILINEAR))
    img = big.copy()
    img[20:140, 20:180] = small
    found = FaceDetector(retinaface_weights).detect(img)
    assert len(found) == 2
    tiny = min(found, key=lambda d: d.box[2] - d.box[0])
    assert 20 <= tiny.box[0] and tiny.box[2] <= 180 and 20 <= tiny.box[1] and tiny.box[3] <= 140
    assert len(FaceDetector(retinaface_weights, fast=True).detect(img)) == 1  # the documented price of fast mode
