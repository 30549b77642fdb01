"""FairFace: CUDA-saved state dicts loaded on the CPU under both published 7-race names (4-race optional), strict
loading, per-head softmax against numpy, labels and tops, the chip rebuilt independently, and (with dlib installed)
the calibrated template's chip against dlib's own."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from attr_checkpoints import save_fairface_checkpoint
from PIL import Image

from faceqc_gui.engine import fairface as ff
from faceqc_gui.engine import registry
from faceqc_gui.engine.errors import ModelLoadError
from faceqc_gui.engine.imageio import load_rgb
from faceqc_gui.engine.records import Detection, FaceResult

# predict.py's label lists and slices (MODELS.md §4.2)
RACE7 = ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"]
RACE4 = ["White", "Black", "Asian", "Indian"]
GENDER = ["Male", "Female"]
AGE9 = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="session")
def fairface_files(tmp_path_factory):
    """Seeded 7-race and 4-race networks saved like the published files (CUDA-tagged state dicts), once."""
    d = tmp_path_factory.mktemp("fairface")
    net7 = save_fairface_checkpoint(d / registry.MODELS["fairface"].filenames[0], seed=1)
    net4 = save_fairface_checkpoint(d / registry.MODELS["fairface4"].filenames[0], seed=2)
    return net7, net4, d


@pytest.fixture(scope="session")
def model(fairface_files):
    _, _, d = fairface_files
    return ff.FairFaceModel(d / registry.MODELS["fairface"].filenames[0], "cpu",
                            weights4_path=d / registry.MODELS["fairface4"].filenames[0])


@pytest.fixture(scope="module")
def photo(testdata):
    return load_rgb(testdata / "faces" / "synthetic" / "sfhq_pt2_00001286.jpg")  # 894 x 893


def test_cuda_saved_files_load_on_the_cpu(fairface_files, model):
    net7, net4, d = fairface_files
    path = d / registry.MODELS["fairface"].filenames[0]
    if not torch.cuda.is_available():  # the fixture file really is CUDA-tagged, like the official one
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    assert all(p.device.type == "cpu" for p in model.net7.parameters())
    assert model.net4 is not None and not model.net7.training and not model.net4.training
    for ours, theirs in ((model.net7, net7), (model.net4, net4)):
        for (k, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert torch.equal(a, b), k


def test_both_published_7_race_names_are_found_and_load(fairface_files, tmp_path):
    _, _, d = fairface_files
    for name in registry.MODELS["fairface"].filenames:
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / name).symlink_to(d / registry.MODELS["fairface"].filenames[0])
        found = registry.find_model_file("fairface", folder)
        assert found is not None and found.name == name
        assert registry.find_model_file("fairface4", folder) is None
        m = ff.FairFaceModel(found, "cpu", weights4_path=registry.find_model_file("fairface4", folder))
        assert m.net4 is None and m.file_info4 is None and m.n_outputs == 18
        assert m.file_info["file"] == name and len(m.file_info["sha256"]) == 64


def test_torch_load_is_told_to_map_to_the_cpu(monkeypatch, fairface_files):
    seen = []
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    ff.load_fairface_net(fairface_files[2] / registry.MODELS["fairface"].filenames[0])
    assert seen and seen[0].get("map_location") == "cpu" and seen[0].get("weights_only") is True


def numpy_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64))  # predict.py: np.exp(out) / np.sum(np.exp(out)), per slice
    return e / e.sum(axis=1, keepdims=True)


def test_each_head_is_its_own_softmax_of_the_networks_logits(fairface_files, model):
    net7, net4, _ = fairface_files
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        l7, l4 = net7(x).numpy(), net4(x).numpy()
    out = model.forward(x)
    assert out.shape == (3, 22) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0:7], numpy_softmax(l7[:, 0:7]), atol=1e-5)
    np.testing.assert_allclose(out[:, 7:9], numpy_softmax(l7[:, 7:9]), atol=1e-5)
    np.testing.assert_allclose(out[:, 9:18], numpy_softmax(l7[:, 9:18]), atol=1e-5)
    np.testing.assert_allclose(out[:, 18:22], numpy_softmax(l4[:, 0:4]), atol=1e-5)
    for sl in (slice(0, 7), slice(7, 9), slice(9, 18), slice(18, 22)):
        np.testing.assert_allclose(out[:, sl].sum(1), 1.0, atol=1e-5)
    assert np.abs(out[0] - out[1]).max() > 1e-3  # outputs depend on the input: the comparison means something


def test_annotate_writes_labelled_heads_and_tops(model):
    row = np.concatenate([
        [0.05, 0.1, 0.05, 0.5, 0.1, 0.1, 0.1],  # East Asian
        [0.3, 0.7],  # Female
        [0, 0, 0.1, 0.2, 0.6, 0.1, 0, 0, 0],  # 30-39
        [0.1, 0.1, 0.7, 0.1],  # Asian
    ]).astype(np.float32)
    face = FaceResult(0, Detection(np.zeros(4, np.float32), np.zeros((5, 2), np.float32), 1.0))
    model.annotate(face, row)
    got = face.fairface
    assert list(got["race7"]) == RACE7 and list(got["race4"]) == RACE4
    assert list(got["gender"]) == GENDER and list(got["age"]) == AGE9
    assert (got["race7_top"], got["race4_top"], got["gender_top"], got["age_top"]) == (
        "East Asian", "Asian", "Female", "30-39")
    assert got["race7"]["Black"] == pytest.approx(0.1) and got["age"]["40-49"] == pytest.approx(0.1)
    model.annotate(face, row[:18])  # no 4-race file
    assert face.fairface["race4"] is None and face.fairface["race4_top"] is None
    assert face.fairface["race7_top"] == "East Asian"
    with pytest.raises(ValueError):
        model.annotate(face, row[:17])


def _cheap(net: torch.nn.Module) -> dict:
    return {k: torch.zeros(()).expand(v.shape) for k, v in net.state_dict().items()}


def test_strict_loading_rejects_wrong_files(tmp_path, fairface_files):
    template = ff.build_fairface_resnet34()
    imagenet = ff.build_fairface_resnet34()
    imagenet.fc = torch.nn.Linear(512, 1000)  # plain torchvision resnet34: the most likely wrong download
    missing = _cheap(template)
    del missing["layer4.2.bn2.running_var"]
    cases = {
        "imagenet_resnet34.pt": (_cheap(imagenet), "fc.weight"),
        "missing.pt": (missing, "layer4.2.bn2.running_var"),
        "prefixed.pt": ({"module." + k: v for k, v in _cheap(template).items()}, "module.conv1.weight"),
        "not_a_dict.pt": ([torch.zeros(3)], "list"),
    }
    for name, (obj, needle) in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(ModelLoadError) as e:
            ff.FairFaceModel(tmp_path / name, "cpu")
        assert name in str(e.value) and needle in str(e.value), str(e.value)
    good = fairface_files[2] / registry.MODELS["fairface"].filenames[0]
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[: 1 << 20])
    (tmp_path / "page.pt").write_text("<html>Google Drive can't scan this file for viruses</html>")
    for name in ("truncated.pt", "page.pt"):
        with pytest.raises(ModelLoadError, match=name.replace(".", r"\.")):
            ff.FairFaceModel(good, "cpu", weights4_path=tmp_path / name)  # a bad 4-race file fails too


# ---------------------------------------------------------------------------------------------------------------
# Preprocessing, rebuilt without fairface.py's code


def similarity_lsq(src: np.ndarray, dst: np.ndarray) -> tuple[complex, complex]:
    """dst ≈ a * src + b in complex numbers (least-squares similarity)."""
    s = src[:, 0] + 1j * src[:, 1]
    d = dst[:, 0] + 1j * dst[:, 1]
    sc, dc = s - s.mean(), d - d.mean()
    a = (np.conj(sc) @ dc) / (np.conj(sc) @ sc)
    return a, d.mean() - a * s.mean()


def bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Samples img (float) at pixel-index coordinates, zero outside."""
    h, w = img.shape[:2]
    x0, y0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fx, fy = u - x0, v - y0
    out = np.zeros(u.shape + img.shape[2:])
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        out[ok] += wt[ok][..., None] * img[yi[ok], xi[ok]]
    return out


def reference_input(rgb: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """predict.py's steps by hand: long side 800 (dlib's corner-aligned bilinear), chip 300 from the similarity of
    the landmarks onto the template (no pyramid needed at this scale), PIL Resize((224, 224)), ImageNet norm."""
    h, w = rgb.shape[:2]
    new_w, new_h = (800, int(800 * h / w)) if w > h else (int(800 * w / h), 800)
    ys, xs = np.mgrid[0:new_h, 0:new_w].astype(np.float64)
    small = bilinear(rgb.astype(np.float64), xs * (w - 1) / (new_w - 1), ys * (h - 1) / (new_h - 1))
    small = np.clip(np.round(small), 0, 255)
    lm8 = lm * [(new_w - 1) / (w - 1), (new_h - 1) / (h - 1)]
    a, b = similarity_lsq(lm8, ff.CHIP_TEMPLATE_300)
    cy, cx = np.mgrid[0:300, 0:300]
    z = (cx + 1j * cy - b) / a
    chip = np.clip(np.round(bilinear(small, z.real, z.imag)), 0, 255).astype(np.uint8)
    x = np.asarray(Image.fromarray(chip).resize((224, 224), Image.BILINEAR), np.float64) / 255.0
    return ((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def pose_landmarks(center, eye_distance, angle_deg):
    t = ff.CHIP_TEMPLATE_300
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    scale = eye_distance / np.linalg.norm(t[1] - t[0])
    return ((t - t.mean(0)) * scale) @ rot.T + np.asarray(center, np.float64)


def test_prepare_reproduces_predict_py_steps(model, photo):
    lms = np.stack([pose_landmarks((450, 430), 200, 8.0), pose_landmarks((150, 700), 90, -20.0)])
    got = model.prepare(photo, lms.astype(np.float32))
    assert got.shape == (2, 3, 224, 224) and got.dtype == torch.float32
    for i, lm in enumerate(lms.astype(np.float32).astype(np.float64)):
        want = reference_input(photo, lm)
        diff = np.abs(got[i].numpy() - want) * IMAGENET_STD[:, None, None] * 255  # in 0-255 levels
        # OpenCV quantises bilinear weights to 1/32 px before both uint8 roundings: one level, rarely.
        assert diff.max() < 1.01 and diff.mean() < 0.02, (diff.max(), diff.mean())


@pytest.mark.parametrize("eye_distance, emulate", [(50, True), (150, False), (900, False)])
def test_landmarks_land_on_the_template_in_the_chip(eye_distance, emulate):
    """Blobs drawn at a face's landmarks end up at the template points, for an upsampled chip, a plain one and one
    shrunk > 2x (dlib's pyramid path), from a 2000-px photo both with and without the 800-px resize."""
    h, w = 1500, 2000
    lms = pose_landmarks((1000, 760), eye_distance, 14.0)
    sigma = max(4.0, eye_distance / 60)
    img = np.zeros((h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    for k, (x, y) in enumerate(lms):
        r = int(6 * sigma)
        sl = (slice(int(y) - r, int(y) + r), slice(int(x) - r, int(x) + r))
        img[sl + (k % 3,)] += 250 * np.exp(-((xx[sl] - x) ** 2 + (yy[sl] - y) ** 2) / (2 * sigma ** 2))
    rgb = np.clip(np.round(img), 0, 255).astype(np.uint8)
    chip = ff.fairface_chips(rgb, lms[None], emulate_resize=emulate)[0].astype(np.float64)
    cy, cx = np.mgrid[0:300, 0:300]
    for k, (tx, ty) in enumerate(ff.CHIP_TEMPLATE_300):
        near = (np.abs(cx - tx) < 12) & (np.abs(cy - ty) < 12)
        wgt = chip[..., k % 3] * near
        wgt = np.where(wgt > 0.2 * wgt.max(), wgt, 0)
        centroid = np.array([(wgt * cx).sum(), (wgt * cy).sum()]) / wgt.sum()
        np.testing.assert_allclose(centroid, [tx, ty], atol=0.35, err_msg=f"landmark {k}")


def test_bad_inputs_are_reported_not_crashed(model, photo):
    assert model.prepare(photo, np.zeros((0, 5, 2), np.float32)).shape == (0, 3, 224, 224)
    away = pose_landmarks((-9000, -9000), 100, 0)[None]
    black = model.prepare(photo, away)[0].numpy()  # nothing of the photo in the chip
    np.testing.assert_allclose(black, np.broadcast_to((-IMAGENET_MEAN / IMAGENET_STD)[:, None, None], black.shape),
                               atol=1e-5)
    for bad in (np.full((1, 5, 2), np.nan), np.zeros((1, 5, 2)), np.zeros((2, 3))):
        with pytest.raises(ValueError):
            model.prepare(photo, bad)
    with pytest.raises(ValueError):
        model.prepare(photo[..., 0], pose_landmarks((400, 400), 100, 0)[None])


# ---------------------------------------------------------------------------------------------------------------
# Against dlib itself (optional dependency: only for this check and tools/calibrate_fairface_template.py)


def _dlib_models():
    dlib = pytest.importorskip("dlib", reason="dlib not installed (pip install dlib-bin): dlib parity not checked",
                               exc_type=ImportError)
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        pytest.skip("face-recognition-models not installed: no dlib 5-point model to compare with")
    return dlib, Path(list(spec.submodule_search_locations)[0]) / "models"


def dlib_chip_to_image(rect, angle: float) -> np.ndarray:
    """dlib's extract_image_chips mapping, chip pixel -> image pixel (non-pyramid case)."""
    left, top, right, bottom = rect
    c = np.array([(left + right) / 2, (top + bottom) / 2])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    tl, tr, bl = (c + rot @ (np.array(p) - c) for p in ((left, top), (right, top), (left, bottom)))
    return np.column_stack([(tr - tl) / 299, (bl - tl) / 299, tl])


@pytest.mark.parametrize("name", ["synthetic/sfhq_pt2_00001286.jpg", "real/max_Chris.jpeg"])
def test_calibrated_chip_is_close_to_dlibs_chip(name, testdata, retinaface_weights):
    dlib, folder = _dlib_models()
    from faceqc_gui.engine.detect import FaceDetector

    rgb = load_rgb(testdata / "faces" / name)
    h, w = rgb.shape[:2]
    new_w, new_h = ff.fairface_source_size(w, h)
    img8 = dlib.resize_image(rgb, rows=new_h, cols=new_w)
    # dlib's HOG detector instead of predict.py's CNN one: 50x faster on a CPU, and its box moves dlib's chip by
    # only ~4 px on average (the landmarks decide the chip).
    rects = dlib.get_frontal_face_detector()(img8, 1)
    assert len(rects) == 1
    shape = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))(img8, rects[0])
    details = dlib.get_face_chip_details(shape, size=300, padding=0.25)
    dlib_chip = np.asarray(dlib.get_face_chip(img8, shape, size=300, padding=0.25))
    r = details.rect
    truth = dlib_chip_to_image((r.left(), r.top(), r.right(), r.bottom()), details.angle)

    faces = FaceDetector(retinaface_weights, "cpu").detect(rgb)
    assert len(faces) == 1
    ours = ff.fairface_chips(rgb, faces[0].landmarks[None])[0]

    # Geometry: where dlib's chip corners land in ours (chip pixels).
    lm8 = faces[0].landmarks.astype(np.float64) * [(new_w - 1) / (w - 1), (new_h - 1) / (h - 1)]
    a, b = similarity_lsq(lm8, ff.CHIP_TEMPLATE_300)
    corners = np.array([[0, 0], [299, 0], [0, 299], [299, 299]], np.float64)
    in_image = corners @ truth[:, :2].T + truth[:, 2]
    z = a * (in_image[:, 0] + 1j * in_image[:, 1]) + b
    err = np.hypot(z.real - corners[:, 0], z.imag - corners[:, 1])
    # Frontal faces: a few px here; over all 73 calibration faces the mean is 19 px (docs/FAIRFACE_ALIGNMENT.md).
    assert err.max() < 15, err

    # Pixels: ours is far closer to dlib's chip than the same crop 20 chip-px off.
    def mad(x):
        return np.abs(np.asarray(Image.fromarray(x).resize((224, 224), Image.BILINEAR), np.float64)
                      - np.asarray(Image.fromarray(dlib_chip).resize((224, 224), Image.BILINEAR), np.float64)).mean()

    shifted = ff.fairface_chips(rgb, faces[0].landmarks[None], template=ff.CHIP_TEMPLATE_300 + [20, 0])[0]
    assert mad(ours) < 0.6 * mad(shifted), (mad(ours), mad(shifted))
