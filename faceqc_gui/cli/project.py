"""`faceqc project ...`: curation projects from the command line, on the same store API as the app.

    faceqc project create P.faceqc [FOLDER...]     new project (refuses an existing file)
    faceqc project add P FOLDER...                 add folders or files
    faceqc project score P [score options]         score new/changed files only; Ctrl-C keeps what is done
    faceqc project status P [--json]               counts, threshold, folders, model files
    faceqc project list P [--status ...]           image paths matching a filter, sorted
    faceqc project set P PATH... --accept|--reject|--clear     overrides (a folder means every image under it)
    faceqc project threshold P [NORM] [--score-mode primary|lowest]
    faceqc project undo P / faceqc project redo P
    faceqc project export P TARGET [--mode copy|hardlink|symlink] [--crops] [--force]
    faceqc project balance P ...                   (when the balance module is present)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from ..engine.errors import FaceQCError

STORE_EVERY = 32  # results per transaction while scoring: a kill loses at most this many
STORE_SECONDS = 2.0  # ...or this much work, when images are slow


def register(sub) -> None:
    p = sub.add_parser("project", help="curation projects: create, score, review, export",
                       description="A project is one file that keeps the scores, your accept/reject decisions and "
                                   "their undo history for a set of folders.")
    psub = p.add_subparsers(dest="project_command", required=True, metavar="ACTION")

    c = psub.add_parser("create", help="create a new project file")
    c.add_argument("project", metavar="P", help="the new project file, e.g. faces.faceqc")
    c.add_argument("folders", nargs="*", metavar="FOLDER", help="folders (or files) to add")
    c.set_defaults(func=run_create)

    a = psub.add_parser("add", help="add folders or files to a project")
    a.add_argument("project", metavar="P")
    a.add_argument("folders", nargs="+", metavar="FOLDER")
    a.set_defaults(func=run_add)

    s = psub.add_parser("score", help="score the project's new or changed files",
                        description="Walks the project's folders and scores only new or changed files and files "
                                    "scored by other model files; renamed files keep their results and decisions, "
                                    "removed files are marked missing.")
    s.add_argument("project", metavar="P")
    from .score import add_model_options

    add_model_options(s)
    s.set_defaults(func=run_score)

    st = psub.add_parser("status", help="counts, threshold, folders and model files")
    st.add_argument("project", metavar="P")
    st.add_argument("--json", action="store_true", help="print machine-readable JSON")
    st.set_defaults(func=run_status)

    ls = psub.add_parser("list", help="print the paths of images matching a filter")
    ls.add_argument("project", metavar="P")
    ls.add_argument("--status", default=None, metavar="LIST",
                    help="comma-separated: accepted, rejected, overridden, no_face, error, missing, unscored (any of)")
    ls.add_argument("--min-score", type=float, default=None, metavar="NORM")
    ls.add_argument("--max-score", type=float, default=None, metavar="NORM")
    ls.add_argument("--path-contains", default=None, metavar="TEXT")
    ls.add_argument("--sort", default="score", metavar="KEY",
                    help="score (default), path, id, n_faces, decision, celeba:<Attribute>, <head>:<label>")
    ls.add_argument("--ascending", action="store_true")
    ls.add_argument("--details", action="store_true", help="also print decision, reason and score")
    ls.set_defaults(func=run_list)

    se = psub.add_parser("set", help="accept, reject or clear the override of images (one undoable step)")
    se.add_argument("project", metavar="P")
    se.add_argument("paths", nargs="+", metavar="PATH", help="image paths, or folders: every image under them")
    g = se.add_mutually_exclusive_group(required=True)
    g.add_argument("--accept", dest="value", action="store_const", const="accept")
    g.add_argument("--reject", dest="value", action="store_const", const="reject")
    g.add_argument("--clear", dest="value", action="store_const", const="clear")
    se.set_defaults(func=run_set)

    th = psub.add_parser("threshold", help="show or change the threshold and which face decides (undoable)")
    th.add_argument("project", metavar="P")
    th.add_argument("value", nargs="?", type=float, metavar="NORM", help="MagFace norm at or above which to accept")
    th.add_argument("--score-mode", choices=["primary", "lowest"],
                    help="primary: the largest face decides (default); lowest: the lowest-scoring face")
    th.set_defaults(func=run_threshold)

    for name, what in (("undo", "undo the last change"), ("redo", "redo the last undone change")):
        u = psub.add_parser(name, help=what)
        u.add_argument("project", metavar="P")
        u.set_defaults(func=run_undo if name == "undo" else run_redo)

    e = psub.add_parser("export", help="copy or link the accepted images with manifests into a folder",
                        description="Writes images/, manifest.csv, manifest.json, list_attr_celeba.txt, "
                                    "fairface_labels.csv and summary.txt into TARGET. Sources are never modified.")
    e.add_argument("project", metavar="P")
    e.add_argument("target", metavar="TARGET", help="an empty (or new) folder outside the project's folders")
    e.add_argument("--mode", choices=["copy", "hardlink", "symlink"], default=None,
                   help="how images get there (default: the project's last choice, else copy)")
    e.add_argument("--crops", action="store_true", help="also write 112x112 aligned crops of the primary faces")
    e.add_argument("--force", action="store_true",
                   help="allow a non-empty TARGET (existing files are still never overwritten)")
    e.add_argument("--celeba-threshold", type=float, default=None, metavar="P",
                   help="probability at or above which list_attr_celeba.txt says +1 (default 0.5)")
    e.set_defaults(func=run_export)

    try:
        from .balance import register_balance
    except ImportError:
        pass
    else:
        register_balance(psub)


def _open(path: str):
    from ..engine.store import Project

    return Project.open(path)


def run_create(args: argparse.Namespace) -> int:
    from ..engine.store import Project

    for f in args.folders:
        if not Path(f).expanduser().exists():
            raise FaceQCError(f"cannot add {f}: no such file or folder.")
    with Project.create(args.project) as project:
        for f in args.folders:
            project.add_folder(f)
        n = len(project.folders())
    print(f"Created {args.project} with {n} folder{'' if n == 1 else 's'}. Next: faceqc project score {args.project}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    with _open(args.project) as project:
        for f in args.folders:
            project.add_folder(f)
        print(f"{args.project}: {len(project.folders())} folders.")
    return 0


def _flush(project, pending: list) -> None:
    if pending:
        project.store_results(pending)
        pending.clear()


def run_score(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..engine import pipeline
    from . import score as score_cmd

    with _open(args.project) as project:
        project.acquire_write_lock()  # fail now, not after loading the networks
        if not project.folders():
            raise FaceQCError(f"{args.project} has no folders yet: faceqc project add {args.project} FOLDER")
        loaded = score_cmd.load_from_args(args)
        plan = project.plan_scoring(loaded.model_ids)
        for f in plan.missing_folders:
            print(f"faceqc: folder not found (its images are marked missing): {f}", file=sys.stderr)
        print(f"faceqc: {plan.summary()}", file=sys.stderr)
        todo = plan.to_score
        stop = threading.Event()
        pending: list = []
        done = 0
        last = time.monotonic()
        bar = tqdm(total=len(todo), unit="img", file=sys.stderr, dynamic_ncols=True, disable=None)
        results = pipeline.ScorePipeline(loaded, batch_size=args.batch_size).run(todo, stop_event=stop)
        try:
            for result in results:
                pending.append(result)
                done += 1
                bar.update(1)
                if len(pending) >= STORE_EVERY or time.monotonic() - last > STORE_SECONDS:
                    _flush(project, pending)
                    last = time.monotonic()
            _flush(project, pending)
        except KeyboardInterrupt:
            stop.set()
            results.close()
            _flush(project, pending)
            bar.close()
            print(f"faceqc: interrupted after {done} of {len(todo)} images; their results are saved. Run the same "
                  "command again to continue.", file=sys.stderr)
            return 130
        bar.close()
        c = project.counts()
    print(f"Scored {done} images. {_counts_line(c)}")
    return 0


def _counts_line(c: dict) -> str:
    return (f"{c['total']} images: {c['accepted']} accepted, {c['rejected']} rejected ({c['overridden']} overridden, "
            f"{c['no_face']} without a face, {c['error']} errors, {c['unscored']} not scored, {c['missing']} missing)")


def run_status(args: argparse.Namespace) -> int:
    from ..engine.quality import quality_0_100

    with _open(args.project) as project:
        c = project.counts()
        info = {"project": str(project.path), "folders": project.folders(), "threshold": project.threshold,
                "score_mode": project.score_mode, "counts": c, "models": project.models_used(),
                "can_undo": project.can_undo(), "can_redo": project.can_redo()}
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"Project {info['project']}")
    for f in info["folders"]:
        print(f"  folder {f}")
    face = "largest face" if info["score_mode"] == "primary" else "lowest-scoring face"
    print(f"Threshold: MagFace norm {info['threshold']:g} (quality {quality_0_100(info['threshold'])}/100), "
          f"on each image's {face}")
    print(_counts_line(c))
    for m in info["models"]:
        print(f"  model {m['key']}: {m['file']} ({(m['sha256'] or '?')[:12]}) on {m['images']} images")
    return 0


def run_list(args: argparse.Namespace) -> int:
    import numpy as np

    from ..engine.decisions import filter_mask, sort_rows
    from ..engine.store import REASON_TEXT, Filter, Project

    status = {s.strip() for s in args.status.split(",") if s.strip()} if args.status else None
    flt = Filter(status=status, score_min=args.min_score, score_max=args.max_score, path_contains=args.path_contains)
    with Project.open(args.project) as project:
        snap = project.snapshot()
        rows = sort_rows(snap, np.flatnonzero(filter_mask(snap, flt)), args.sort, not args.ascending)
        accepted, reason = snap.decide()
    try:
        for r in rows:
            if args.details:
                s = "" if np.isnan(snap.score[r]) else f"{snap.score[r]:.3f}"
                print(f"{'accepted' if accepted[r] else 'rejected'}\t{REASON_TEXT[int(reason[r])]}\t{s}\t"
                      f"{snap.paths[r]}")
            else:
                print(snap.paths[r])
        sys.stdout.flush()
    except BrokenPipeError:  # `faceqc project list P | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def run_set(args: argparse.Namespace) -> int:
    value = None if args.value == "clear" else args.value
    with _open(args.project) as project:
        found = project.ids_for_paths(args.paths)
        unknown = [p for p, ids in found.items() if not ids]
        if unknown:
            raise FaceQCError("not in the project (nothing was changed): " + ", ".join(unknown))
        ids = sorted({i for v in found.values() for i in v})
        project.set_override(ids, value)
        c = project.counts()
    what = {"accept": "accepted", "reject": "rejected", None: "override cleared for"}[value]
    print(f"{what} {len(ids)} image{'' if len(ids) == 1 else 's'}. {_counts_line(c)}")
    return 0


def run_threshold(args: argparse.Namespace) -> int:
    with _open(args.project) as project:
        if args.value is not None:
            project.set_threshold(args.value)
        if args.score_mode is not None:
            project.set_score_mode(args.score_mode)
        print(f"threshold {project.threshold:g}, score mode {project.score_mode}. {_counts_line(project.counts())}")
    return 0


def run_undo(args: argparse.Namespace) -> int:
    with _open(args.project) as project:
        what = project.undo()
        print(f"undone: {what}" if what else "nothing to undo")
    return 0 if what else 1


def run_redo(args: argparse.Namespace) -> int:
    with _open(args.project) as project:
        what = project.redo()
        print(f"redone: {what}" if what else "nothing to redo")
    return 0 if what else 1


def run_export(args: argparse.Namespace) -> int:
    from ..engine.export import export_project
    from ..engine.store import ProjectLockedError

    with _open(args.project) as project:
        saved = project.get_setting("export", {}) or {}
        mode = args.mode or saved.get("mode") or "copy"
        if not args.mode and mode != "copy":
            # A symlink export to a USB disk would point back at this machine: never reuse a link mode silently.
            print(f"faceqc: exporting as {mode}s, the mode of the last export (--mode copy to copy the files)",
                  file=sys.stderr)
        celeba_t = args.celeba_threshold if args.celeba_threshold is not None else saved.get("celeba_threshold", 0.5)
        summary = export_project(project, args.target, mode=mode, crops=args.crops, allow_nonempty=args.force,
                                 celeba_threshold=celeba_t)
        try:  # remembered for next time; an export itself only reads, so a project open elsewhere is fine
            project.set_setting("export", {"mode": mode, "crops": bool(args.crops), "celeba_threshold": celeba_t,
                                           "target": str(summary.target)})
        except ProjectLockedError:
            pass
    print(summary.text())
    return 0
