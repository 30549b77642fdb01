"""MagFace: the architecture's facts, the official checkpoint layouts, failures, preprocessing and the norm."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from magface_checkpoints import official_ddp_dict, random_backbone, save_official_ddp_checkpoint, \
    save_official_dp_checkpoint

from faceqc_gui.engine import magface
from faceqc_gui.engine.align import ARCFACE_112
from faceqc_gui.engine.errors import ModelLoadError
from faceqc_gui.engine.iresnet import build_iresnet
from faceqc_gui.engine.magface import MagFaceModel, extract_backbone_state, preprocess_aligned
from faceqc_gui.engine.records import Detection, FaceResult


@pytest.fixture(scope="session")
def r100_files(tmp_path_factory):
    """Both official layouts of one seeded iresnet100, built once for the session (~260 MB each)."""
    d = tmp_path_factory.mktemp("magface100")
    net = save_official_ddp_checkpoint(d / "magface_epoch_00025.pth", depth=100, seed=3)
    save_official_dp_checkpoint(d / "magface_dp.pth", depth=100, seed=3)
    return net, d / "magface_epoch_00025.pth", d / "magface_dp.pth"


def test_iresnet100_has_the_official_keys_and_size():
    sd = build_iresnet(100).state_dict()
    assert len(sd) == 925
    assert round(sum(v.numel() for v in sd.values() if v.dtype.is_floating_point) / 1e6, 1) == 65.2
    assert tuple(sd["fc.weight"].shape) == (512, 25088) and "features.running_var" in sd
    bn = build_iresnet(18).layer1[0].bn1
    assert bn.eps == 2e-5
    assert isinstance(build_iresnet(18).dropout, torch.nn.Dropout2d) and build_iresnet(18).dropout.p == 0.4


def test_both_official_layouts_load_and_reproduce_the_network(r100_files):
    net, ddp, dp = r100_files
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        want = net(x).numpy()
    for path in (ddp, dp):
        m = MagFaceModel(path, "cpu")
        got = m.forward(x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert not m.net.training
    m = MagFaceModel(ddp, "cpu")
    assert m.file_info["file"] == "magface_epoch_00025.pth"
    assert m.is_official is False  # same name, different bytes: reported as custom weights, still loads


def test_forward_is_deterministic_in_eval_mode():
    torch.manual_seed(0)
    net = random_backbone(18, seed=1)
    m = MagFaceModel.__new__(MagFaceModel)  # without a file: only the state forward() needs
    m.device, m.net, m.file_info = torch.device("cpu"), net, {}
    x = torch.rand(3, 3, 112, 112)
    np.testing.assert_array_equal(m.forward(x), m.forward(x))  # Dropout2d(0.4) off


def test_bare_backbone_and_classifier_confusion(tmp_path):
    net = random_backbone(18, seed=2)
    expected = net.state_dict()
    bare = extract_backbone_state(dict(expected), expected)
    assert set(bare) == set(expected)
    # Under the DDP prefix, an unprefixed 'fc.weight' is the classifier shard ([classes, 512]): it must be skipped,
    # not confused with the backbone's own fc.weight ([512, 25088]).
    ckpt = official_ddp_dict(net, n_classes=7)
    got = extract_backbone_state(ckpt, expected)
    assert torch.equal(got["fc.weight"], expected["fc.weight"])


def test_incomplete_or_wrong_checkpoints_are_refused(tmp_path):
    net = random_backbone(18, seed=4)
    expected = net.state_dict()
    ckpt = official_ddp_dict(net)
    del ckpt["state_dict"]["features.module.layer2.0.conv1.weight"]
    with pytest.raises(ModelLoadError, match=r"filled only 186 of the 187"):
        extract_backbone_state(ckpt, expected, "x.pth")
    wrong = {"state_dict": {"features.module." + k: v for k, v in expected.items()}}  # an iresnet18 where 50 is due
    with pytest.raises(ModelLoadError, match="not a MagFace iResNet100 checkpoint"):
        extract_backbone_state(wrong, build_iresnet(50).state_dict())
    with pytest.raises(ModelLoadError):
        extract_backbone_state(["not", "a", "dict"], expected)


def test_unreadable_files_fail_with_clear_messages(tmp_path, r100_files):
    _, ddp, _ = r100_files
    cut = tmp_path / "cut.pth"
    with open(ddp, "rb") as f:
        cut.write_bytes(f.read(3_000_000))
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        MagFaceModel(cut)
    text = tmp_path / "text.pth"
    text.write_text("<html>quota exceeded</html>")
    with pytest.raises(ModelLoadError):
        MagFaceModel(text)

    class Evil:
        def __reduce__(self):
            return (print, ("this would run code",))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    with pytest.raises(ModelLoadError, match="refuses to unpickle"):
        MagFaceModel(evil)
    with pytest.raises(ModelLoadError, match="filled only 0"):
        torch.save({"state_dict": {"something": torch.zeros(3)}}, tmp_path / "empty.pth")
        MagFaceModel(tmp_path / "empty.pth")


def test_preprocessing_is_bgr_over_255_without_normalisation():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    got = preprocess_aligned(crops).numpy()
    # Independent: what cv2.imread (BGR) + torchvision ToTensor + Normalize((0,0,0),(1,1,1)) produce.
    ref = np.stack([np.stack([c[:, :, 2], c[:, :, 1], c[:, :, 0]]) for c in crops]).astype(np.float32) / 255.0
    np.testing.assert_allclose(got, ref, atol=1e-7)
    assert got.dtype == np.float32 and got.shape == (2, 3, 112, 112)


def test_channel_order_matters_and_prepare_aligns_from_landmarks(r100_files):
    net, ddp, _ = r100_files
    m = MagFaceModel(ddp)
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
    lms = (ARCFACE_112 * 2.0 + [20, 30]).astype(np.float32)[None]
    x = m.prepare(img, lms)
    assert x.shape == (1, 3, 112, 112)
    # Crop of a 2x-scaled template equals the image downsampled at those points: check one landmark pixel.
    ex, ey = ARCFACE_112[2]
    sx, sy = ex * 2 + 20, ey * 2 + 30
    assert abs(x[0, 0, int(ey), int(ex)].item() * 255 - img[int(round(sy)), int(round(sx)), 2]) < 40  # B from BGR
    rgb_out = m.forward(x)
    swapped = m.forward(x.flip(1))  # RGB fed where BGR is expected
    a, b = rgb_out[0], swapped[0]
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cos < 0.9999 and abs(np.linalg.norm(rgb_out) - np.linalg.norm(swapped)) > 1e-4


def test_annotate_sets_the_raw_norm():
    m = MagFaceModel.__new__(MagFaceModel)
    face = FaceResult(0, Detection(np.zeros(4, np.float32), np.zeros((5, 2), np.float32), 0.9))
    row = np.full(512, 0.5, np.float32)
    m.annotate(face, row)
    assert face.magface_norm == pytest.approx(0.5 * np.sqrt(512))  # not L2-normalised first
    assert face.embedding.shape == (512,) and face.quality_0_100 == 1  # 11.3 is far below OFIQ's centre 23


def test_module_exposes_the_prefixes():
    assert magface.PREFIXES == ("features.module.", "module.features.")
