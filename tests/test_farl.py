"""FaRL CelebA attributes: built and loaded on a CPU-only torch, facer's exact keys, strict loading, facer's crop
reproduced by an independent sampler, sigmoid outputs, the 40 labels in order."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from attr_checkpoints import save_farl_checkpoint

from faceqc_gui.engine import farl
from faceqc_gui.engine.errors import ModelLoadError
from faceqc_gui.engine.imageio import load_rgb
from faceqc_gui.engine.labels import CELEBA_ATTRIBUTES
from faceqc_gui.engine.records import Detection, FaceResult

# facer's 224 template as MODELS.md §3.4 computes it by hand from get_std_points_xray(224, 500).
TEMPLATE_224 = np.array([[93.108, 106.525], [130.392, 105.880], [111.809, 129.472], [95.288, 146.362],
                         [129.610, 145.767]])
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])


@pytest.fixture(scope="session")
def farl_file(tmp_path_factory):
    """A seeded random FaRL CelebA network saved as facer's plain state dict (343 MB), once per session."""
    path = tmp_path_factory.mktemp("farl") / "face_attribute.farl.celeba.pt"
    net = save_farl_checkpoint(path, seed=5)
    return net, path


@pytest.fixture(scope="session")
def farl_model(farl_file):
    return farl.FarlCelebAModel(farl_file[1], "cpu")


@pytest.fixture(scope="module")
def photo(testdata):
    return load_rgb(testdata / "faces" / "synthetic" / "sfhq_pt1_00000161.jpg")


def similarity_points(center, scale, angle_deg, pts=TEMPLATE_224):
    """The template moved by a similarity: landmarks of a face of known pose."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return ((pts - pts.mean(0)) * scale) @ rot.T + np.asarray(center, np.float64)


def _cheap_state(expected: dict) -> dict:
    """Full-shape tensors that cost nothing on disk (stride-0 views of one number)."""
    return {k: torch.zeros(()).expand(v.shape) for k, v in expected.items()}


@pytest.fixture(scope="module")
def cheap_complete_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("farl_cheap") / "complete.pt"
    torch.save(_cheap_state(farl.build_farl_celeba(random_init=False).state_dict()), path)
    return path


def test_network_never_calls_cuda_and_has_facers_exact_keys(monkeypatch, farl_file, cheap_complete_file):
    """The loader works where .cuda() raises (no NVIDIA driver), and its modules are facer's farl/celeba/224."""

    def no_driver(self, device=None):
        raise RuntimeError("Found no NVIDIA driver on your system.")

    monkeypatch.setattr(torch.nn.Module, "cuda", no_driver)
    model = farl.FarlCelebAModel(cheap_complete_file, "cpu")
    ours = model.net.state_dict()
    assert len(ours) == 158
    assert all(t.device.type == "cpu" for t in ours.values())

    # facer's own constructor, with .cuda made harmless and its slow random init skipped.
    facer_farl = pytest.importorskip("facer.face_attribute.farl")
    import facer.farl.model as facer_model

    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, device=None: self)
    monkeypatch.setattr(facer_model, "trunc_normal_", lambda t, *a, **k: t)
    theirs = facer_farl.farl_classification(num_classes=40, layers=[11]).state_dict()
    assert list(ours) == list(theirs)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    saved = torch.load(farl_file[1], map_location="cpu", weights_only=True)
    assert list(saved) == list(theirs)
    assert round(sum(v.numel() for v in saved.values()) / 1e6, 2) == 85.83  # MODELS.md §3.3


def test_outputs_are_the_sigmoid_of_the_saved_networks_logits(farl_model, farl_file):
    net = farl_file[0]
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = torch.sigmoid(net(x)).numpy()
    got = farl_model.forward(x)
    assert got.shape == (2, 40) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert ((got >= 0) & (got <= 1)).all()
    assert got.std() > 0.05  # the seeded net is not a constant: the comparison above means something
    assert not farl_model.net.training


def test_strict_loading_rejects_every_kind_of_wrong_file(tmp_path, farl_file, cheap_complete_file):
    # cheap_complete_file (all keys, all shapes) loads in the test above: the failures below are about content.
    expected = torch.load(cheap_complete_file, map_location="cpu", weights_only=True)

    cases = {}
    missing = _cheap_state(expected)
    del missing["head.final_fc.bias"]
    cases["missing.pt"] = (missing, "head.final_fc.bias")
    wrong = _cheap_state(expected)
    wrong["head.final_fc.weight"] = torch.zeros(2, 768)  # a 2-label head
    cases["wrong_shape.pt"] = (wrong, "head.final_fc.weight")
    extra = _cheap_state(expected)
    extra["backbone.proj"] = torch.zeros(768, 512)  # an un-deleted CLIP projection: not facer's network
    cases["extra.pt"] = (extra, "backbone.proj")
    cases["wrapped.pt"] = ({"state_dict": _cheap_state(expected)}, "state_dict")
    for name, (obj, needle) in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(ModelLoadError) as e:
            farl.FarlCelebAModel(tmp_path / name, "cpu")
        assert name in str(e.value) and needle in str(e.value), str(e.value)

    (tmp_path / "garbage.pt").write_bytes(b"<html>Not Found</html>")
    head = farl_file[1].read_bytes()[: 5 << 20]
    (tmp_path / "truncated.pt").write_bytes(head)
    for name in ("garbage.pt", "truncated.pt"):
        with pytest.raises(ModelLoadError, match=name.replace(".", r"\.")):
            farl.FarlCelebAModel(tmp_path / name, "cpu")


def reference_crop(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Independent of facer: least-squares similarity in closed form (complex numbers), then for each output pixel
    centre (x + 0.5, y + 0.5) the inverse map, back to pixel indices (- 0.5), bilinear with zeros outside, on the
    float image; CLIP normalisation. (3, 224, 224) float64."""
    src = landmarks[:, 0] + 1j * landmarks[:, 1]
    dst = TEMPLATE_224_FACER[:, 0] + 1j * TEMPLATE_224_FACER[:, 1]
    sc, dc = src - src.mean(), dst - dst.mean()
    a = (np.conj(sc) @ dc) / (np.conj(sc) @ sc)  # dst ≈ a * src + b
    b = dst.mean() - a * src.mean()
    ys, xs = np.mgrid[0:224, 0:224]
    z = ((xs + 0.5) + 1j * (ys + 0.5) - b) / a
    u, v = z.real - 0.5, z.imag - 0.5
    img = rgb.astype(np.float64) / 255.0
    h, w = img.shape[:2]
    x0, y0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fx, fy = u - x0, v - y0
    out = np.zeros((224, 224, 3))
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        out[ok] += wt[ok][:, None] * img[yi[ok], xi[ok]]
    return ((out - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)


# The exact float template facer uses (MODELS.md's 3-decimal numbers are for the landmark test below).
_STD_256 = np.array([[85.82991, 85.7792], [169.0532, 84.3381], [127.574, 137.0006], [90.6964, 174.7014],
                     [167.3069, 173.3733]]) + [0, 30]
TEMPLATE_224_FACER = (_STD_256 - 128 + 250) * 224 / 500


def test_template_matches_the_documented_numbers():
    np.testing.assert_allclose(TEMPLATE_224_FACER, TEMPLATE_224, atol=1e-3)  # the doc rounds to 3 decimals
    np.testing.assert_allclose(farl.template_224().numpy(), TEMPLATE_224_FACER, atol=1e-4)


@pytest.mark.parametrize("pose", [
    ((450, 420), 2.6, 12.0),  # a large, tilted face
    ((300, 500), 0.7, -25.0),  # a small face (upsampled)
    ((40, 60), 1.8, 5.0),  # half outside the photo: zero padding
])
def test_crop_matches_an_independent_sampler_and_facers_full_image_path(photo, pose):
    lms = similarity_points(*pose)[None].astype(np.float32)
    got = farl.farl_crops(photo, lms)
    assert got.shape == (1, 3, 224, 224) and got.dtype == torch.float32
    want = reference_crop(photo, lms[0].astype(np.float64))
    np.testing.assert_allclose(got[0].numpy(), want, atol=1e-4)

    # facer's own code on the whole float photo (what FaRLFaceAttribute.forward does): same numbers.
    import facer.transform as ft

    image = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255.0
    matrix = ft.get_face_align_matrix(torch.from_numpy(lms), target_shape=(224, 224),
                                      target_pts=farl.template_224())
    grid = ft.make_tanh_warp_grid(matrix=matrix, warp_factor=0.0, warped_shape=(224, 224),
                                  orig_shape=photo.shape[:2])
    full = F.grid_sample(image, grid, mode="bilinear", align_corners=False)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)
    np.testing.assert_allclose(got.numpy(), ((full - mean) / std).numpy(), atol=1e-4)


def test_landmarks_land_on_facers_template_in_the_crop():
    """Five coloured blobs drawn at a tilted face's landmarks end up at the template points of the 224 crop."""
    lms = similarity_points((330, 300), 1.9, -17.0)
    h, w = 600, 700
    ys, xs = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3))
    for k, (x, y) in enumerate(lms):
        # a landmark at continuous coordinate x is pixel index x - 0.5 (facer's grid convention)
        blob = np.exp(-((xs - (x - 0.5)) ** 2 + (ys - (y - 0.5)) ** 2) / (2 * 3.0 ** 2))
        img[..., k % 3] += blob * (k + 1) * 40
    rgb = np.clip(np.round(img), 0, 255).astype(np.uint8)
    crop = farl.farl_crops(rgb, lms[None].astype(np.float32))[0].numpy()
    crop = crop.transpose(1, 2, 0) * CLIP_STD + CLIP_MEAN  # back to [0, 1]
    cy, cx = np.mgrid[0:224, 0:224]
    for k, (tx, ty) in enumerate(TEMPLATE_224):
        near = (np.abs(cx - (tx - 0.5)) < 9) & (np.abs(cy - (ty - 0.5)) < 9)
        wgt = crop[..., k % 3] * near
        wgt = np.where(wgt > 0.1 * wgt.max(), wgt, 0)
        centroid = np.array([(wgt * cx).sum(), (wgt * cy).sum()]) / wgt.sum()
        np.testing.assert_allclose(centroid, [tx - 0.5, ty - 0.5], atol=0.25, err_msg=f"landmark {k}")


def test_prepare_and_annotate_on_a_real_face(farl_model, photo, retinaface_weights):
    from faceqc_gui.engine.detect import FaceDetector

    faces = FaceDetector(retinaface_weights, "cpu").detect(photo)
    assert len(faces) == 1
    batch = farl_model.prepare(photo, np.stack([f.landmarks for f in faces]))
    out = farl_model.forward(batch)
    assert out.shape == (1, 40) and ((out >= 0) & (out <= 1)).all()
    face = FaceResult(0, Detection(faces[0].box, faces[0].landmarks, faces[0].score))
    farl_model.annotate(face, out[0])
    assert list(face.celeba) == list(CELEBA_ATTRIBUTES)
    assert (list(face.celeba)[0], list(face.celeba)[20], list(face.celeba)[39]) == ("5_o_Clock_Shadow", "Male",
                                                                                    "Young")
    np.testing.assert_allclose(list(face.celeba.values()), out[0], atol=1e-7)
    import facer.face_attribute.farl as facer_farl

    assert list(CELEBA_ATTRIBUTES) == facer_farl.pretrain_settings["celeba/224"]["classes"]


def test_bad_inputs_are_reported_not_crashed(farl_model, photo):
    assert farl_model.prepare(photo, np.zeros((0, 5, 2), np.float32)).shape == (0, 3, 224, 224)
    far_away = similarity_points((-5000, -5000), 1.0, 0.0)[None]
    crop = farl_model.prepare(photo, far_away)[0].numpy()  # nothing of the photo in it: black, normalised
    np.testing.assert_allclose(crop, np.broadcast_to((-CLIP_MEAN / CLIP_STD)[:, None, None], crop.shape), atol=1e-6)
    for bad in (np.full((1, 5, 2), np.nan), np.zeros((1, 4, 2)), np.zeros((1, 5, 2))):
        with pytest.raises(ValueError):
            farl_model.prepare(photo, bad)
    with pytest.raises(ValueError):
        farl_model.prepare(photo[..., 0], similarity_points((300, 300), 1.0, 0.0)[None])
    with pytest.raises(ValueError):
        farl_model.annotate(FaceResult(0, Detection(np.zeros(4), np.zeros((5, 2)), 1.0)), np.zeros(39))
