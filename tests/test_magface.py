"""MagFace without the real weights: architecture facts, the official checkpoint layouts, refusals with clear messages,
preprocessing against independent computations, eval mode and the raw norm.

Seeded random weights stand in for the real ones (tests/magface_checkpoints.py); iResNet18 wherever the depth does
not matter, iResNet100 (the published architecture, ~283 MB files built once per session) for the loader itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from magface_checkpoints import CLASSIFIER_ROWS, random_backbone, save, wrap
from PIL import Image

from faceqc_gui.engine import registry
from faceqc_gui.engine.align import ARCFACE_112, estimate_similarity
from faceqc_gui.engine.errors import ModelLoadError
from faceqc_gui.engine.imports import import_preserving_qt_env
from faceqc_gui.engine.iresnet import build_iresnet, expected_shapes, infer_depth
from faceqc_gui.engine.magface import (
    MagFaceModel,
    extract_backbone_state,
    load_magface_state_dict,
    preprocess_aligned,
)
from faceqc_gui.engine.records import Detection, FaceResult

cv2 = import_preserving_qt_env("cv2")


@pytest.fixture(scope="session")
def r100(tmp_path_factory):
    """One seeded iResNet100 saved in both official layouts (DDP = the published file's, DP)."""
    d = tmp_path_factory.mktemp("magface100")
    net = random_backbone(100, seed=3)
    sd = net.state_dict()
    return SimpleNamespace(
        net=net,
        state=sd,
        ddp=save(wrap(sd, "ddp", depth=100), d / "magface_epoch_00025.pth"),
        dp=save(wrap(sd, "dp", depth=100), d / "magface_dp.pth"),
    )


@pytest.fixture(scope="session")
def r18(tmp_path_factory):
    d = tmp_path_factory.mktemp("magface18")
    net = random_backbone(18, seed=1)
    sd = net.state_dict()
    path = save(wrap(sd, "ddp", depth=18), d / "magface_iresnet18.pth")
    return SimpleNamespace(net=net, state=sd, path=path, model=MagFaceModel(path, "cpu"))


@pytest.fixture(scope="session")
def toy_crops(testdata):
    """Real aligned 112x112 faces (MagFace's toy images) as RGB, decoded the way the official code does (OpenCV)."""
    d = testdata / "reference" / "magface_toy"
    return np.stack([cv2.imread(str(d / f"{i}.jpg"))[..., ::-1] for i in (0, 9)])


# --- architecture --------------------------------------------------------------------------------------------------


def test_iresnet100_has_the_published_size_and_key_layout():
    shapes = expected_shapes(100)
    assert len(shapes) == 925  # MODELS.md §1.2, counted from the official models/iresnet.py
    with torch.device("meta"):
        net = build_iresnet(100)
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 65.2
    assert len(expected_shapes(50)) == 475 and len(expected_shapes(18)) == 187
    assert shapes["fc.weight"] == (512, 25088) and shapes["features.running_var"] == (512,)
    assert shapes["conv1.weight"] == (64, 3, 3, 3) and "prelu.weight" in shapes
    assert "layer1.0.bn1.num_batches_tracked" in shapes and "layer3.29.bn3.weight" in shapes
    assert "layer3.30.bn3.weight" not in shapes and "layer2.12.prelu.weight" in shapes
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [3, 13, 30, 3]
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(m.eps == 2e-5 and m.momentum == 0.9 for m in bns)
    assert isinstance(net.dropout, torch.nn.Dropout2d) and net.dropout.p == 0.4
    assert isinstance(net.features, torch.nn.BatchNorm1d) and net.features.affine
    assert [infer_depth(expected_shapes(d)) for d in (18, 34, 50, 100)] == [18, 34, 50, 100]


def test_every_stage_halves_the_resolution_and_the_head_is_bn_dropout_fc_bn():
    net = random_backbone(18, seed=5)
    sizes = {}
    for i in range(1, 5):
        getattr(net, f"layer{i}").register_forward_hook(lambda m, a, out, i=i: sizes.__setitem__(i, out.shape[1:]))
    x = torch.rand(1, 3, 112, 112)
    with torch.no_grad():
        out = net(x)
        assert [tuple(sizes[i]) for i in range(1, 5)] == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
        # Independent functional spelling of MODELS.md §1.2, sharing only the weights.
        def bn(m, t):
            return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, 2e-5)

        def block(b, t):
            y = bn(b.bn1, t)
            y = F.conv2d(y, b.conv1.weight, padding=1)
            y = F.prelu(bn(b.bn2, y), b.prelu.weight)
            y = bn(b.bn3, F.conv2d(y, b.conv2.weight, stride=b.conv2.stride, padding=1))
            if b.downsample is not None:
                t = bn(b.downsample[1], F.conv2d(t, b.downsample[0].weight, stride=2))
            return y + t

        y = F.prelu(bn(net.bn1, F.conv2d(x, net.conv1.weight, padding=1)), net.prelu.weight)
        for i in range(1, 5):
            for b in getattr(net, f"layer{i}"):
                y = block(b, y)
        y = F.linear(bn(net.bn2, y).reshape(1, -1), net.fc.weight, net.fc.bias)
        y = bn(net.features, y)
    torch.testing.assert_close(out, y, rtol=1e-4, atol=1e-4)
    assert net.layer1[0].conv2.stride == (2, 2) and net.layer1[0].conv1.stride == (1, 1)


# --- loading the official layouts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["ddp", "dp"])
def test_official_iresnet100_files_load_and_reproduce_the_network(r100, layout):
    path = getattr(r100, layout)
    state = load_magface_state_dict(path)
    assert set(state) == set(r100.state)
    assert all(torch.equal(state[k], r100.state[k]) for k in state)  # classifier shard ([10718, 512]) not taken
    model = MagFaceModel(path, "cpu")
    assert model.depth == 100 and not model.net.training
    x = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(7))
    if not hasattr(r100, "want"):
        with torch.no_grad():
            r100.want = r100.net(x).numpy()
    np.testing.assert_allclose(model.forward(x), r100.want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["ddp", "dp", "wrapper", "ddp_parallel_fc", "bare", "bare_in_state_dict"])
def test_every_layout_gives_the_same_backbone(r18, layout):
    ckpt = wrap(r18.state, layout, depth=18)
    got = extract_backbone_state(ckpt)
    assert set(got) == set(r18.state)
    assert all(torch.equal(got[k], r18.state[k]) for k in got)


def test_the_bare_backbones_fc_and_features_are_not_mistaken_for_a_classifier(r18):
    # The bare backbone's own 'fc.weight' [512, 25088] and 'features.*' (BatchNorm1d) sit at the top level, like the
    # DDP file's classifier 'fc.weight' [10718, 512]: each must land where it belongs.
    bare = extract_backbone_state(wrap(r18.state, "bare", depth=18))
    assert bare["fc.weight"].shape == (512, 25088)
    assert torch.equal(bare["features.weight"], r18.state["features.weight"])
    ddp = wrap(r18.state, "ddp", depth=18)
    assert ddp["state_dict"]["fc.weight"].shape == (CLASSIFIER_ROWS, 512)
    assert torch.equal(extract_backbone_state(ddp)["fc.weight"], r18.state["fc.weight"])


def test_old_files_without_num_batches_tracked_load(r18):
    ckpt = wrap({k: v for k, v in r18.state.items() if not k.endswith("num_batches_tracked")}, "ddp", depth=18)
    got = extract_backbone_state(ckpt)
    assert set(got) == set(r18.state)


# --- refusals --------------------------------------------------------------------------------------------------------


def test_missing_weights_are_counted_and_named(r18):
    ckpt = wrap(r18.state, "ddp", depth=18)
    del ckpt["state_dict"]["features.module.layer2.1.conv1.weight"]
    del ckpt["state_dict"]["features.module.features.running_var"]
    with pytest.raises(ModelLoadError) as e:
        extract_backbone_state(ckpt, "x.pth")
    msg = str(e.value)
    assert "2 of its 187 backbone weights are missing" in msg
    assert "layer2.1.conv1.weight" in msg and "features.running_var" in msg and "x.pth" in msg


def test_a_missing_last_block_is_reported_not_guessed_away(r18):
    sd = {k: v for k, v in r18.state.items() if not k.startswith("layer4.1.")}
    # bn1, bn2, bn3 (4 tensors each, num_batches_tracked aside), conv1, conv2, prelu: 15 weights.
    with pytest.raises(ModelLoadError, match=r"iResNet18 checkpoint: 15 of its 187 backbone weights are missing"):
        extract_backbone_state(wrap(sd, "dp", depth=18))


def test_wrong_shapes_are_named(r18):
    ckpt = wrap(r18.state, "ddp", depth=18)
    ckpt["state_dict"]["features.module.layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    want = r"layer1\.0\.conv1\.weight \(64, 64, 1, 1\) \(expected \(64, 64, 3, 3\)\)"
    with pytest.raises(ModelLoadError, match=want):
        extract_backbone_state(ckpt)


def test_nan_weights_are_refused(r18):
    ckpt = wrap(r18.state, "ddp", depth=18)
    w = ckpt["state_dict"]["features.module.fc.weight"].clone()
    w[3, 5] = float("nan")
    ckpt["state_dict"]["features.module.fc.weight"] = w
    with pytest.raises(ModelLoadError, match="fc.weight holds NaN"):
        extract_backbone_state(ckpt)


def test_a_truncated_download_is_reported(r100, tmp_path):
    cut = tmp_path / "magface_epoch_00025.pth"
    with open(r100.ddp, "rb") as f:
        cut.write_bytes(f.read(150_000_000))
    with pytest.raises(ModelLoadError, match=r"truncated or corrupt.*150\.0 MB.*283 MB"):
        MagFaceModel(cut, "cpu")


@pytest.mark.parametrize(
    "content, phrase",
    [
        (b"", "is empty"),
        (b"epoch 25\nweights: see drive\n", "is a text file"),
        (b"<!DOCTYPE html><html><title>Google Drive - Virus scan warning</title>", "is a web page"),
        (bytes(range(7, 255)) * 10, "not a PyTorch checkpoint"),
    ],
)
def test_files_that_are_not_checkpoints_are_refused(tmp_path, content, phrase):
    p = tmp_path / "magface_epoch_00025.pth"
    p.write_bytes(content)
    with pytest.raises(ModelLoadError, match=phrase):
        MagFaceModel(p, "cpu")


def test_a_plain_pickle_is_refused(tmp_path):
    p = tmp_path / "magface_epoch_00025.pth"
    p.write_bytes(pickle.dumps({"state_dict": {"conv1.weight": [0.0] * 27}}, protocol=4))
    with pytest.raises(ModelLoadError, match="not a PyTorch checkpoint that can be read safely"):
        MagFaceModel(p, "cpu")


def test_unreadable_paths_are_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="Cannot read"):
        MagFaceModel(tmp_path / "nope.pth", "cpu")
    with pytest.raises(ModelLoadError, match="Cannot read"):
        MagFaceModel(tmp_path, "cpu")


def test_another_models_weights_are_refused(retinaface_weights):
    with pytest.raises(ModelLoadError, match="holds no MagFace iResNet weights"):
        MagFaceModel(retinaface_weights, "cpu")


@pytest.mark.parametrize("obj, phrase", [([1, 2, 3], "holds a list"), (torch.zeros(3), "holds a Tensor"),
                                         ({"state_dict": [torch.zeros(3)]}, "'state_dict' entry is a list")])
def test_checkpoints_of_the_wrong_kind_are_refused(tmp_path, obj, phrase):
    p = save(obj, tmp_path / "x.pth")
    with pytest.raises(ModelLoadError, match=phrase):
        load_magface_state_dict(p)


def test_pickled_objects_are_never_unpickled(r18, tmp_path):
    # An extra entry needing weights_only=False (here an argparse.Namespace, as training scripts often save) makes
    # the file unloadable under weights_only=True: the message must say so and how to get a clean file.
    p = save({**wrap(r18.state, "ddp", depth=18), "args": argparse.Namespace(lr=0.1)}, tmp_path / "with_args.pth")
    with pytest.raises(ModelLoadError, match=r"(?s)argparse\.Namespace.*refuses to unpickle.*weights_only=False"):
        MagFaceModel(p, "cpu")

    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = save({"state_dict": {"conv1.weight": Payload()}}, tmp_path / "evil.pth")
    with pytest.raises(ModelLoadError, match="refuses to unpickle"):
        MagFaceModel(evil, "cpu")
    assert not marker.exists()


# --- file identity ---------------------------------------------------------------------------------------------------


def test_custom_weights_load_and_are_reported_as_custom(r18, monkeypatch):
    info = r18.model.file_info
    assert info["sha256"] == hashlib.sha256(r18.path.read_bytes()).hexdigest()
    assert info["file"] == r18.path.name and Path(info["path"]) == r18.path
    assert info["official"] is False and r18.model.is_official is False
    # The same file, if it were the published one, is recognised by its hash.
    spec = registry.MODELS["magface"]
    monkeypatch.setitem(registry.MODELS, "magface", dataclasses.replace(spec, sha256=info["sha256"]))
    assert MagFaceModel(r18.path, "cpu").is_official is True


# --- preprocessing ---------------------------------------------------------------------------------------------------


def _official_tensor(bgr: np.ndarray) -> torch.Tensor:
    """gen_feat.py's transform on what cv2.imread returned: ToTensor, then Normalize(mean 0, std 1)."""
    import torchvision.transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])])(bgr)


def test_preprocessing_matches_opencv_reading_and_the_official_transform(tmp_path):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    want = []
    for i, c in enumerate(crops):
        Image.fromarray(c, "RGB").save(tmp_path / f"{i}.png")
        want.append(_official_tensor(cv2.imread(str(tmp_path / f"{i}.png"))))
    got = preprocess_aligned(crops)
    assert got.dtype == torch.float32 and got.shape == (3, 3, 112, 112)
    assert torch.equal(got, torch.stack(want))
    assert float(got.max()) <= 1.0 and float(got.min()) >= 0.0  # /255, no mean/std


def test_prepare_is_the_official_alignment_on_the_bgr_image(r18, tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (240, 200, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "img.png")
    lms = np.stack([ARCFACE_112 * 1.5 + [30, 40], ARCFACE_112 * 0.8 + [90, 100]]).astype(np.float32)
    got = r18.model.prepare(rgb, lms)
    bgr = cv2.imread(str(tmp_path / "img.png"))
    want = [
        _official_tensor(cv2.warpAffine(bgr, estimate_similarity(lm, ARCFACE_112), (112, 112), borderValue=0))
        for lm in lms
    ]
    assert got.shape == (2, 3, 112, 112) and torch.equal(got, torch.stack(want))
    assert r18.model.prepare(rgb, np.zeros((0, 5, 2), np.float32)).shape == (0, 3, 112, 112)


def test_channel_order_changes_the_embedding(r18, toy_crops):
    right = r18.model.embed_aligned(toy_crops)
    swapped = r18.model.embed_aligned(np.ascontiguousarray(toy_crops[..., ::-1]))
    cos = np.sum(right * swapped, 1) / (np.linalg.norm(right, axis=1) * np.linalg.norm(swapped, axis=1))
    assert np.all(cos < 0.999), cos
    assert np.all(np.abs(np.linalg.norm(right, axis=1) - np.linalg.norm(swapped, axis=1)) > 1e-3)


def test_bad_inputs_raise_value_errors_not_crashes(r18):
    with pytest.raises(ValueError, match=r"\(n, 112, 112, 3\)"):
        preprocess_aligned(np.zeros((1, 100, 112, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        preprocess_aligned(np.zeros((1, 112, 112, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(n, 3, 112, 112\)"):
        r18.model.forward(torch.zeros(1, 112, 112, 3))
    assert r18.model.forward(torch.zeros(0, 3, 112, 112)).shape == (0, 512)
    assert r18.model.embed_aligned(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 512)


# --- eval mode and the norm ------------------------------------------------------------------------------------------


def test_eval_mode_deterministic_and_batch_independent(r18, toy_crops):
    m = r18.model
    assert not any(mod.training for mod in m.net.modules())
    x = preprocess_aligned(toy_crops)
    a, b = m.forward(x), m.forward(x)
    np.testing.assert_array_equal(a, b)  # Dropout2d(0.4) is off
    # BatchNorm on running statistics: a face's embedding does not depend on what else is in the batch.
    singles = np.concatenate([m.forward(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(a, singles, rtol=1e-5, atol=1e-5)
    # And it is the source network in eval mode, not in train mode.
    with torch.no_grad():
        np.testing.assert_allclose(a, r18.net(x).numpy(), rtol=1e-5, atol=1e-5)


def test_annotate_stores_the_raw_embedding_and_its_l2_norm(r18, toy_crops):
    rows = r18.model.embed_aligned(toy_crops)
    with torch.no_grad():
        raw = r18.net(preprocess_aligned(toy_crops)).double()
    for row, ref in zip(rows, raw):
        face = FaceResult(0, Detection(np.zeros(4, np.float32), np.zeros((5, 2), np.float32), 0.9))
        r18.model.annotate(face, row)
        assert face.embedding.dtype == np.float32 and face.embedding.shape == (512,)
        np.testing.assert_array_equal(face.embedding, row)
        assert face.magface_norm == pytest.approx(float(torch.sqrt((ref**2).sum())), rel=1e-5)
        assert abs(face.magface_norm - 1.0) > 0.5  # not L2-normalised


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_gives_the_cpu_embeddings(r18, toy_crops):
    gpu = MagFaceModel(r18.path, "cuda")
    cpu = r18.model.embed_aligned(toy_crops)
    # TF32 convolutions (PyTorch's default on Ampere+) move the output by ~1e-3 relative.
    np.testing.assert_allclose(gpu.embed_aligned(toy_crops), cpu, rtol=5e-3, atol=5e-3)


@pytest.mark.parametrize("norm, expected", [(23.0, 50), (25.6, 73), (20.0, 24), (20.4, 27), (30.0, 94),
                                            (15.0, 4), (None, None), (float("nan"), None)])
def test_ofiq_quality_mapping_values(norm, expected):
    # OFIQ: round(100 * sigmoid((norm - 23) / 2.6)); values computed by hand (25.6 = centre + one width).
    from faceqc_gui.engine.quality import norm_from_0_100, quality_0_100

    assert quality_0_100(norm) == expected
    if expected is not None:
        assert quality_0_100(norm_from_0_100(expected)) == expected
        assert abs(norm_from_0_100(50) - 23.0) < 1e-9 and abs(norm_from_0_100(100 / (1 + np.exp(-1))) - 25.6) < 1e-9
