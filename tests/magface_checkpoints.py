"""Builds MagFace checkpoints the way the official training code saves them, from the real architecture with seeded
random weights (and random BatchNorm statistics, so eval mode is not an identity)."""

from __future__ import annotations

import torch

from faceqc_gui.engine.iresnet import build_iresnet


def random_backbone(depth: int = 100, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_iresnet(depth)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return net.eval()


def official_ddp_dict(net: torch.nn.Module, n_classes: int = 10718) -> dict:
    """magface_epoch_00025.pth's layout: DDP-wrapped backbone keys plus one GPU's classifier shard."""
    state = {"features.module." + k: v.clone() for k, v in net.state_dict().items()}
    state["fc.weight"] = torch.randn(n_classes, 512)
    return {"epoch": 25, "arch": "iresnet100", "state_dict": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}}


def official_dp_dict(net: torch.nn.Module, n_classes: int = 1000) -> dict:
    """The DataParallel layout of the repo's trainer.py: 'module.features.' prefix and 'module.fc.weight'."""
    state = {"module.features." + k: v.clone() for k, v in net.state_dict().items()}
    state["module.fc.weight"] = torch.randn(n_classes, 512)
    return {"epoch": 1, "arch": "iresnet100", "state_dict": state}


def save_official_ddp_checkpoint(path, depth: int = 100, seed: int = 0) -> torch.nn.Module:
    net = random_backbone(depth, seed)
    torch.save(official_ddp_dict(net), path)
    return net


def save_official_dp_checkpoint(path, depth: int = 100, seed: int = 0) -> torch.nn.Module:
    net = random_backbone(depth, seed)
    torch.save(official_dp_dict(net), path)
    return net
