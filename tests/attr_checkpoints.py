"""Builds checkpoints of the attribute models from their real architectures with seeded random weights, in the
official files' layouts: FaRL CelebA = facer's plain state dict (158 tensors); FairFace = a torchvision resnet34
state dict with an 18-way fc, whose storages say 'cuda:0' like the published files (saved from a GPU)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from faceqc_gui.engine.fairface import build_fairface_resnet34
from faceqc_gui.engine.farl import build_farl_celeba


def random_farl(seed: int = 0) -> torch.nn.Module:
    """facer's network with seeded weights that make every part matter: LayerNorm gains and biases away from 1/0,
    unequal head mixing weights, logits spread around 0 so sigmoids are not all 0.5."""
    net = build_farl_celeba(random_init=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            is_norm_gain = name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight")) or (
                ".norm_" in name and name.endswith("weight"))
            if is_norm_gain:
                p.copy_(1 + 0.2 * (torch.rand(p.shape, generator=gen) - 0.5))
            elif name == "head.weights":
                p.copy_(torch.randn(p.shape, generator=gen))
            elif name == "head.final_fc.weight":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return net.eval()


def save_farl_checkpoint(path, seed: int = 0) -> torch.nn.Module:
    net = random_farl(seed)
    torch.save(net.state_dict(), path)
    return net


def random_fairface(seed: int = 0) -> torch.nn.Module:
    """resnet34 + Linear(512, 18), seeded, with random BatchNorm statistics so eval mode is not an identity."""
    torch.manual_seed(seed)
    net = build_fairface_resnet34()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        # A random ResNet's pooled features share a large common part; centre and scale the fc on them so the
        # logits vary with the input by a few units (softmaxes neither uniform nor saturated).
        gen = torch.Generator().manual_seed(seed)
        probe = torch.randn(8, 3, 224, 224, generator=gen)
        fc, net.fc = net.fc, torch.nn.Identity()
        feats = net.eval()(probe)
        net.fc = fc
        weight = torch.randn(fc.weight.shape, generator=gen) / feats.std(0).clamp_min(1e-3) * (2 / 512 ** 0.5)
        fc.weight.copy_(weight)
        fc.bias.copy_(-(weight @ feats.mean(0)) + 0.5 * torch.randn(fc.bias.shape, generator=gen))
    return net.eval()


def save_cuda_tagged(state: dict, path) -> None:
    """torch.save, then rewrite the pickle so every storage says it lives on 'cuda:0' (as in a file saved from a
    GPU). torch.load without map_location then fails on a machine without CUDA, exactly like the official files."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".cpu")
    torch.save(state, tmp)
    with zipfile.ZipFile(tmp) as src, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                # protocol 2 pickle: the location string is written once and memoised for every other storage
                old, new = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
                assert data.count(old) == 1, "unexpected torch.save pickle layout"
                data = data.replace(old, new)
            dst.writestr(info.filename, data)
    tmp.unlink()


def save_fairface_checkpoint(path, seed: int = 0) -> torch.nn.Module:
    net = random_fairface(seed)
    save_cuda_tagged(net.state_dict(), path)
    return net
