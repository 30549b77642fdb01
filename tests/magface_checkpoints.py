"""Builds MagFace-like checkpoints for the tests: seeded random iResNet weights wrapped the way the official files are.

Random BatchNorm running statistics and affine parameters make eval mode differ from both an identity and train
mode, so a loader that drops or mixes up BN buffers gives different embeddings. The official layouts (MODELS.md §1.3):
  DDP (magface_epoch_00025.pth): {'epoch', 'arch', 'state_dict': {'features.module.<key>': ..., 'fc.weight':
        [10718, 512] classifier shard}, 'optimizer': {...}}
  DP: {'state_dict': {'module.features.<key>': ..., 'module.fc.weight': [classes, 512]}, ...}
"""

from __future__ import annotations

from pathlib import Path

import torch

from faceqc_gui.engine.iresnet import build_iresnet

CLASSIFIER_ROWS = 10718  # one GPU's shard of MS1MV2's 85742 identities, as in the published file


def random_backbone(depth: int, seed: int = 0) -> torch.nn.Module:
    """An eval-mode iResNet whose every parameter and BN buffer is seeded-random (and numerically tame)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = build_iresnet(depth)
    with torch.no_grad():
        for name, module in net.named_modules():
            if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                c = module.num_features
                module.weight.copy_(torch.rand(c, generator=g) * 0.8 + 0.6)
                module.bias.copy_(torch.randn(c, generator=g) * 0.1)
                module.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                module.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                module.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (1,), generator=g)))
            elif isinstance(module, torch.nn.PReLU):
                module.weight.copy_(torch.rand(module.weight.shape, generator=g) * 0.5)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                # Scaled down so that 49 residual blocks do not blow the activations up.
                module.weight.copy_(torch.randn(module.weight.shape, generator=g) * (0.5 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
    return net.eval()


def _optimizer_state(n_params: int) -> dict:
    # What torch.optim.SGD.state_dict() holds: plain ints/floats/bools/lists, no tensors when momentum is off.
    return {
        "state": {},
        "param_groups": [
            {"lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 5e-4, "nesterov": False,
             "params": list(range(n_params))}
        ],
    }


def wrap(state: dict[str, torch.Tensor], layout: str, seed: int = 0, depth: int = 100) -> dict:
    """The checkpoint object for a bare backbone state dict in one of the layouts: 'ddp', 'dp', 'wrapper'
    (NetworkBuilder_inf saved directly: 'features.<key>'), 'bare', or 'bare_in_state_dict'."""
    g = torch.Generator().manual_seed(seed + 1)
    classifier = torch.randn(CLASSIFIER_ROWS, 512, generator=g)
    extra = {"epoch": 25, "arch": f"iresnet{depth}", "optimizer": _optimizer_state(len(state))}
    if layout == "ddp":
        sd = {"features.module." + k: v for k, v in state.items()}
        sd["fc.weight"] = classifier
        return {**extra, "state_dict": sd}
    if layout == "dp":
        sd = {"module.features." + k: v for k, v in state.items()}
        sd["module.fc.weight"] = classifier
        return {**extra, "state_dict": sd}
    if layout == "wrapper":
        return {"state_dict": {"features." + k: v for k, v in state.items()}}
    if layout == "ddp_parallel_fc":
        sd = {"features.module." + k: v for k, v in state.items()}
        sd["parallel_fc.weight"] = classifier
        return {**extra, "state_dict": sd}
    if layout == "bare":
        return dict(state)
    if layout == "bare_in_state_dict":
        return {"state_dict": dict(state)}
    raise ValueError(layout)


def save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def save_official_ddp_checkpoint(path: Path, depth: int = 100, seed: int = 0) -> torch.nn.Module:
    """Writes a seeded random iResNet in magface_epoch_00025.pth's (DDP) layout; returns the eval-mode network."""
    net = random_backbone(depth, seed)
    save(wrap(net.state_dict(), "ddp", seed=seed, depth=depth), Path(path))
    return net


def save_official_dp_checkpoint(path: Path, depth: int = 100, seed: int = 0) -> torch.nn.Module:
    net = random_backbone(depth, seed)
    save(wrap(net.state_dict(), "dp", seed=seed, depth=depth), Path(path))
    return net
