"""`faceqc score PATH... -o OUT.jsonl|OUT.csv`: every image's faces, MagFace quality, CelebA and FairFace results."""

from __future__ import annotations

import argparse
import sys
import threading

from ..engine import pipeline
from ..engine.device import describe_device
from ..engine.errors import FaceQCError
from ..engine.output import ResultWriter
from ..engine.quality import DEFAULT_THRESHOLD


def _positive_int(text: str) -> int:
    # Checked while parsing, before any output file is opened (and truncated).
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The options every scoring command shares (`score`, `project score`)."""
    p.add_argument("--models-dir", metavar="DIR", help="folder with the weight files (searched first)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where the networks run (auto: CUDA > MPS > CPU)")
    p.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                   help="faces per network batch (default 32)")
    p.add_argument("--models", default=",".join(pipeline.DEFAULT_MODELS), metavar="LIST",
                   help="comma-separated subset of magface,celeba,fairface (default: all)")
    p.add_argument("--skip-missing", action="store_true",
                   help="run the models whose weights are present and say which were skipped")
    p.add_argument("--fast-detection", action="store_true",
                   help="skip the high-resolution detection pass on images holding only one big face (about 2.5x "
                        "less detection time on a CPU; a small second face beside a big one can then be missed)")


def load_from_args(args: argparse.Namespace) -> pipeline.LoadedModels:
    loaded = pipeline.load_models(args.models, models_dir=args.models_dir, device=args.device,
                                  skip_missing=args.skip_missing,
                                  fast_detection=getattr(args, "fast_detection", False))
    for key, why in loaded.skipped.items():
        first = why.splitlines()[0]
        print(f"faceqc: skipping {key}: {first}", file=sys.stderr)
    for key, info in loaded.file_infos.items():
        if info.get("official") is False:
            print(f"faceqc: note: {info['file']} is not the official {key} file (sha256 differs): custom weights",
                  file=sys.stderr)
        elif info.get("official") is None:
            print(f"faceqc: note: {info['file']} ({key}) is unverified: no sha256 is published for it and none was "
                  f"recorded from a download (records say \"official\": null)", file=sys.stderr)
    return loaded


def register(sub) -> None:
    p = sub.add_parser("score", help="score images or folders and write JSONL/CSV",
                       description="Detect faces and score each one (MagFace quality, CelebA attributes, FairFace).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (walked recursively)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="OUT.jsonl or OUT.csv")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"MagFace norm at or above which a face is accepted (default {DEFAULT_THRESHOLD})")
    add_model_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..engine.scan import iter_image_files

    try:
        entries = list(iter_image_files(args.paths))
    except FileNotFoundError as e:
        raise FaceQCError(f"input path does not exist: {e.filename or e}") from e
    writer = ResultWriter(args.output, threshold=args.threshold)  # checks the extension before loading models
    loaded = load_from_args(args)  # before opening the output: a missing weight file must not truncate old results
    with writer:
        print(f"faceqc: {len(entries)} files, models: {', '.join(['detector'] + loaded.keys)}, "
              f"{describe_device(loaded.device)}", file=sys.stderr)
        stop = threading.Event()
        n_faces = n_errors = n_images = 0
        bar = tqdm(total=len(entries), unit="img", file=sys.stderr, dynamic_ncols=True, disable=None)
        results = pipeline.ScorePipeline(loaded, batch_size=args.batch_size).run(entries, stop_event=stop)
        try:
            for result in results:
                writer.write(result)
                n_images += 1
                n_faces += len(result.faces)
                n_errors += result.error is not None
                bar.update(1)
                bar.set_postfix(faces=n_faces, errors=n_errors, refresh=False)
        except KeyboardInterrupt:
            stop.set()
            results.close()
            bar.close()
            print(f"faceqc: interrupted after {n_images} of {len(entries)} images; {writer.rows} rows kept in "
                  f"{args.output}", file=sys.stderr)
            return 130
        bar.close()
    print(f"faceqc: {n_images} images, {n_faces} faces, {n_errors} errors -> {args.output}", file=sys.stderr)
    return 0
