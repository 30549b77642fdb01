"""Detection with the real RetinaFace weights on the shared photos (counts from testdata/SOURCES.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceqc_gui.engine.detect import FaceDetector
from faceqc_gui.engine.errors import ModelLoadError
from faceqc_gui.engine.imageio import load_rgb


@pytest.fixture(scope="module")
def detector(retinaface_weights):
    return FaceDetector(retinaface_weights, device="cpu")


@pytest.fixture(scope="module")
def counts(detector, testdata):
    """Faces found per shared image, each image detected once for the whole module."""
    out = {}
    for folder in ("faces/real", "faces/synthetic", "nonfaces"):
        for p in sorted((testdata / folder).iterdir()):
            rgb = load_rgb(p)
            dets = detector.detect(rgb)
            out[p.name] = (rgb.shape, dets)
    return out


def n(counts, name):
    return len(counts[name][1])


def test_every_face_photo_has_a_face(counts, testdata):
    for p in list((testdata / "faces" / "real").iterdir()) + list((testdata / "faces" / "synthetic").iterdir()):
        assert n(counts, p.name) >= 1, p.name


@pytest.mark.parametrize("name", [
    "singnet_woman_portrait.jpg", "singnet_model_face.jpg", "sfhq_pt1_00001878.jpg", "sfhq_pt2_00001399.jpg",
    "sfhq_pt1_00000161.jpg", "sfhq_pt1_00002875.jpg", "sfhq_pt2_00001286.jpg", "sfhq_pt2_00001593.jpg",
    "sfhq_pt2_00001843.jpg", "sfhq_pt2_00002324.jpg", "sfhq_pt2_00003040.jpg", "sfhq_pt2_00003124.jpg",
    "ipadapter_ai_face.png", "ipadapter_ai_face2.png", "singnet_city_portrait.jpg", "face_recognition_biden.jpg",
    "max_Bryan.png", "skimage_astronaut.png",
])
def test_one_big_or_small_single_face_gives_exactly_one_box(counts, name):
    # At full resolution faces over ~512 px get extra part-of-face boxes (MODELS.md §9); the two-scale policy must not.
    assert n(counts, name) == 1


def test_group_photos_find_their_people(counts):
    assert 28 <= n(counts, "epfl_solvay-conference-1927.jpg") <= 30  # 29 people; lost at 640 px alone (18)
    assert n(counts, "dlib_2008_007676.jpg") == 7
    assert n(counts, "sfhq_sample_2x4_grid.jpg") == 8
    assert n(counts, "sfhq_sample_1x2_grid.jpg") == 2
    assert n(counts, "pexels_women-on-phones.jpg") == 2  # includes the small out-of-focus woman at the back
    assert 6 <= n(counts, "dlib_2007_007763.jpg") <= 7
    # 4 people and a painted portrait; the detector fires on the painting (a face, honestly), not on parts of faces.
    assert 4 <= n(counts, "epfl_stephen-hawking.jpg") <= 6
    # ~19 girls, many small and occluded in the back rows: RetinaFace-MobileNet on RGB input honestly finds ~15.
    assert 13 <= n(counts, "singnet_classroom_in_tanzania.jpg") <= 20


def test_nonfaces_have_no_face_except_the_humanoid_robot(counts, testdata):
    for p in (testdata / "nonfaces").iterdir():
        if p.name == "hard_robot_singnet_sophia.jpg":
            # Sophia has a realistic human-like face: every face detector fires on it (SOURCES.md). Honest result.
            assert n(counts, p.name) == 1
        else:
            assert n(counts, p.name) == 0, p.name


def test_boxes_and_landmarks_are_in_original_pixels(counts):
    shape, dets = counts["skimage_astronaut.png"]
    d = dets[0]
    x1, y1, x2, y2 = d.box
    # SOURCES.md: the astronaut's face box is about 92x119 px in the 512x512 image.
    assert 80 <= x2 - x1 <= 110 and 105 <= y2 - y1 <= 135
    assert 0 <= x1 < x2 <= shape[1] and 0 <= y1 < y2 <= shape[0]
    for name in ("epfl_solvay-conference-1927.jpg", "sfhq_pt1_00001878.jpg", "pexels_women-on-phones.jpg"):
        shape, dets = counts[name]
        for d in dets:
            bx = d.box
            lx, ly = d.landmarks[:, 0], d.landmarks[:, 1]
            margin = 0.1 * (bx[2] - bx[0])
            assert (lx > bx[0] - margin).all() and (lx < bx[2] + margin).all(), name
            assert (ly > bx[1] - margin).all() and (ly < bx[3] + margin).all(), name
            assert d.landmarks[0, 0] < d.landmarks[1, 0]  # image-left eye first
            assert max(bx[2], bx[3]) <= max(shape[:2]) * 1.05
    # The big synthetic face (1799 px image) spans most of the frame in original pixels, not the 640-px pass's.
    shape, dets = counts["sfhq_pt1_00001878.jpg"]
    assert dets[0].box[2] - dets[0].box[0] > 0.5 * shape[1]


def test_profile_face_is_found(counts):
    # facer_sideface is a full profile; RetinaFace finds it, though its 5 landmarks collapse to one side.
    assert n(counts, "facer_sideface.jpg") == 1


def test_detector_file_info_identifies_the_official_weights(detector):
    assert detector.file_info["sha256"].startswith("2979b33f") and detector.file_info["official"] is True


def test_wrong_or_corrupt_weight_files_fail_clearly(tmp_path, retinaface_weights):
    truncated = tmp_path / "mobilenet0.25_Final.pth"
    truncated.write_bytes(retinaface_weights.read_bytes()[:50_000])
    with pytest.raises(ModelLoadError, match="not a readable RetinaFace checkpoint"):
        FaceDetector(truncated)
    sd = torch.load(retinaface_weights, map_location="cpu", weights_only=True)
    renamed = {k.replace("ClassHead", "ClsHead"): v for k, v in sd.items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(ModelLoadError, match="missing keys"):
        FaceDetector(tmp_path / "renamed.pth")
    text = tmp_path / "text.pth"
    text.write_text("hello")
    with pytest.raises(ModelLoadError):
        FaceDetector(text)
    # The DataParallel prefix, as biubug6's other files carry it, still loads (stripped like the official loader).
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "dp.pth")
    det = FaceDetector(tmp_path / "dp.pth")
    assert det.file_info["official"] is False


def test_empty_and_tiny_images(detector):
    assert detector.detect(np.zeros((8, 8, 3), np.uint8)) == []
    assert detector.detect(np.full((1, 300, 3), 128, np.uint8)) == []
