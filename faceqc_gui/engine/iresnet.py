"""MagFace's own iResNet (IrvingMeng/MagFace models/iresnet.py), not InsightFace's arcface_torch variant.

The two differ in ways that change the embedding norm, which is FaceQC's quality score: here every stage has stride 2
(112 -> 56 -> 28 -> 14 -> 7), and the head is bn2 -> Dropout2d(0.4) -> flatten -> fc(25088 -> 512) ->
BatchNorm1d(512, affine). Every BatchNorm has eps 2e-5 (momentum 0.9, irrelevant at eval). Module names equal the
official state-dict keys so a checkpoint loads with ``strict=True`` once its prefix is stripped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import nn

BN_EPS = 2e-5
BN_MOMENTUM = 0.9
EMBEDDING_SIZE = 512
INPUT_SIZE = 112
STAGE_PLANES = (64, 128, 256, 512)
# Blocks per stage, as the official iresnet18/34/50/100 constructors.
LAYERS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
}


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """bn1 -> conv1 -> bn2 -> prelu -> conv2 (carries the stride) -> bn3, plus the shortcut; nothing after the sum."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = _bn(inplanes)
        self.conv1 = _conv3x3(inplanes, planes)
        self.bn2 = _bn(planes)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = _bn(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    def __init__(self, layers: Iterable[int], embedding_size: int = EMBEDDING_SIZE):
        super().__init__()
        layers = tuple(layers)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = _bn(64)
        self.prelu = nn.PReLU(64)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip(STAGE_PLANES, layers), start=1):
            setattr(self, f"layer{i}", self._stage(inplanes, planes, blocks))
            inplanes = planes
        self.bn2 = _bn(512)
        self.dropout = nn.Dropout2d(p=0.4, inplace=True)
        self.fc = nn.Linear(512 * 7 * 7, embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=BN_EPS, momentum=BN_MOMENTUM)

    @staticmethod
    def _stage(inplanes: int, planes: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes, kernel_size=1, stride=2, bias=False), _bn(planes))
        first = IBasicBlock(inplanes, planes, stride=2, downsample=downsample)
        return nn.Sequential(first, *(IBasicBlock(planes, planes) for _ in range(blocks - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn2(x))
        # flatten (a reshape), not .view: with channels_last on CUDA the tensor is not contiguous, and fc's weights
        # expect the logical (C, H, W) order either way.
        return self.features(self.fc(torch.flatten(x, 1)))


def build_iresnet(depth: int = 100, embedding_size: int = EMBEDDING_SIZE) -> IResNet:
    if depth not in LAYERS:
        raise ValueError(f"iResNet depth must be one of {sorted(LAYERS)}, got {depth!r}")
    return IResNet(LAYERS[depth], embedding_size)


def expected_shapes(depth: int = 100) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of build_iresnet(depth), computed on the meta device (no memory, milliseconds)."""
    with torch.device("meta"):
        net = build_iresnet(depth)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


def infer_depth(keys: Iterable[str]) -> int | None:
    """The depth whose stages hold exactly the blocks named in `keys` (bare backbone keys); when blocks are missing
    (a damaged file), the smallest depth that has room for all the named blocks, so that the caller can say which
    keys are missing. None when the keys name more blocks than iresnet100 has."""
    counts = [0, 0, 0, 0]
    for k in keys:
        m = _BLOCK_KEY.match(k)
        if m:
            s = int(m.group(1)) - 1
            counts[s] = max(counts[s], int(m.group(2)) + 1)
    for depth, layers in LAYERS.items():
        if tuple(counts) == layers:
            return depth
    # The depths' block counts are nested (18 <= 34 <= 50 <= 100 stage by stage), so the first that fits is smallest.
    for depth, layers in LAYERS.items():
        if all(c <= n for c, n in zip(counts, layers)):
            return depth
    return None
