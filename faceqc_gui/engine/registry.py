"""The weight files FaceQC uses: names, sources, checksums, and where they are looked for.

Lookup order (the same for the CLI and the app): an explicit models dir (``--models-dir``), then ``$FACEQC_MODELS``,
then ``./models`` (relative to the working directory), then the user data dir (platformdirs), which is also where
``faceqc models download`` puts files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "faceqc"


@dataclass(frozen=True)
class ModelSpec:
    key: str  # short id used on the CLI (--models) and in records
    filenames: tuple[str, ...]  # accepted file names; the first is the canonical one (downloads are saved under it)
    title: str
    provides: str
    url: str  # official source; Google Drive ids as https://drive.google.com/uc?export=download&id=...
    sha256: str | None  # None: not published; the first verified-size download records it (see download.py)
    size_bytes: int | None  # exact size when known
    approx_mb: float  # for messages and progress before the server says
    licence: str
    source_note: str = ""

    @property
    def filename(self) -> str:
        return self.filenames[0]


MODELS: dict[str, ModelSpec] = {
    "detector": ModelSpec(
        key="detector",
        filenames=("mobilenet0.25_Final.pth", "retinaface_mobilenet0.25.pth"),
        title="RetinaFace MobileNet-0.25 (biubug6/Pytorch_Retinaface, via facer)",
        provides="face boxes and 5 landmarks (needed by every other model)",
        url="https://github.com/elliottzheng/face-detection/releases/download/0.0.1/mobilenet0.25_Final.pth",
        sha256="2979b33ffafda5d74b6948cd7a5b9a7a62f62b949cef24e95fd15d2883a65220",
        size_bytes=1789735,
        approx_mb=1.7,
        licence="MIT",
    ),
    "magface": ModelSpec(
        key="magface",
        filenames=("magface_epoch_00025.pth",),
        title="MagFace iResNet100 (MS1MV2)",
        provides="face quality (MagFace norm) and the 512-d embedding",
        url="https://drive.google.com/uc?export=download&id=1Bd87admxOZvbIOAyTkGEntsEz3fyMt7H",
        sha256="cfeba792dada6f1f30d1e118aff077d493dd95dd76c77c30f57f90fd0164ad58",
        size_bytes=None,
        approx_mb=283,
        licence="Apache-2.0 (IrvingMeng/MagFace)",
        source_note="README model zoo of IrvingMeng/MagFace (Google Drive)",
    ),
    "celeba": ModelSpec(
        key="celeba",
        filenames=("face_attribute.farl.celeba.pt",),
        title="FaRL ViT-B/16 CelebA attributes (farl/celeba/224, facer)",
        provides="40 CelebA attribute probabilities",
        url="https://github.com/FacePerceiver/facer/releases/download/models-v1/face_attribute.farl.celeba.pt",
        sha256=None,
        size_bytes=None,
        approx_mb=344,
        licence="MIT (facer); FaRL weights: see FacePerceiver/FaRL",
    ),
    "fairface": ModelSpec(
        key="fairface",
        filenames=("res34_fair_align_multi_7_20190809.pt", "fairface_alldata_20191111.pt"),
        title="FairFace ResNet-34, 7 races",
        provides="race (7 classes), gender, age (9 bins)",
        url="https://drive.google.com/uc?export=download&id=11y0Wi3YQf21a_VcspUV4FwqzhMcfaVAB",
        sha256=None,
        size_bytes=None,
        approx_mb=85,
        licence="CC BY 4.0 (FairFace data/models, dchen236/FairFace)",
    ),
    "fairface4": ModelSpec(
        key="fairface4",
        filenames=("fairface_alldata_4race_20191111.pt", "res34_fair_align_multi_4_20190809.pt"),
        title="FairFace ResNet-34, 4 races (optional)",
        provides="race (4 classes); used when present",
        url="https://drive.google.com/uc?export=download&id=1fUJSLseDpgilArB_YKep9PnsR7QrPW5I",
        sha256=None,
        size_bytes=None,
        approx_mb=85,
        licence="CC BY 4.0 (FairFace data/models, dchen236/FairFace)",
    ),
}

# Models a user selects with --models (the detector is always needed; fairface4 rides along with fairface).
SELECTABLE = ("magface", "celeba", "fairface")


def user_models_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "models"


def search_dirs(models_dir: str | os.PathLike | None = None) -> list[Path]:
    dirs: list[Path] = []
    if models_dir:
        dirs.append(Path(models_dir).expanduser())
    env = os.environ.get("FACEQC_MODELS")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path.cwd() / "models")
    dirs.append(user_models_dir())
    seen: set[Path] = set()
    unique = []
    for d in dirs:
        r = d.resolve() if d.exists() else d.absolute()
        if r not in seen:
            seen.add(r)
            unique.append(d)
    return unique


def find_model_file(key: str, models_dir: str | os.PathLike | None = None) -> Path | None:
    spec = MODELS[key]
    for d in search_dirs(models_dir):
        for name in spec.filenames:
            p = d / name
            if p.is_file():
                return p
    return None


def missing_message(key: str, models_dir: str | os.PathLike | None = None) -> str:
    spec = MODELS[key]
    where = "\n".join(f"  - {d}" for d in search_dirs(models_dir))
    return (
        f"Missing weight file for {spec.title}: {spec.filename} (provides {spec.provides}).\n"
        f"Looked in:\n{where}\n"
        f"Get it with `faceqc models download {key}`, or download it from {spec.url} "
        f"and put it in one of the folders above (or point $FACEQC_MODELS / --models-dir at its folder)."
    )
