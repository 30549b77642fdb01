"""`faceqc project balance P`: a project's demographic table and a balanced-selection proposal (optionally applied).

Exit status: 0 when the proposal meets the target (and was applied with --apply), 1 when the target cannot be met
(the reasons are printed; nothing changes), 2 for errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine.errors import FaceQCError


def register_balance(project_sub) -> None:
    p = project_sub.add_parser(
        "balance", help="demographic table and a balanced selection (optionally applied)",
        description="Print the FairFace group counts of all scored images and of the accepted ones, then propose the "
                    "highest-quality set that meets a demographic target. With --apply the proposal becomes manual "
                    "accepts/rejects in one undoable step.")
    p.add_argument("project", metavar="P", help="the project file")
    p.add_argument("--by", default="race7,gender", metavar="HEADS",
                   help="FairFace heads that define the groups, comma-separated, from race7, race4, gender, age "
                        "(default race7,gender)")
    p.add_argument("--size", default="max", metavar="N|max",
                   help="number of images in the balanced set, or 'max' for as many as the target allows (default)")
    p.add_argument("--target", default="uniform", metavar="SPEC",
                   help="uniform (default: the same count in every group); shares:GROUP=x,... (relative weights, "
                        "other groups get none); caps:N or caps:GROUP=N,... (at most N per group). GROUP names one "
                        "label per head joined by '/', e.g. 'East Asian/Female'")
    p.add_argument("--require", action="append", default=[], metavar="ATTR>=SHARE",
                   help="CelebA attribute share inside every group, e.g. Smiling>=0.4, Eyeglasses<=0.2, Male=0.5, "
                        "'Smiling>=0.3,Smiling<=0.6' (repeatable; an image has the attribute at p >= 0.5)")
    p.add_argument("--min-conf", type=float, default=0.0, metavar="P",
                   help="a FairFace prediction whose top probability is below P counts as 'uncertain' and its image "
                        "is in no group (default 0)")
    p.add_argument("--mode", choices=["top", "expected"], default="top",
                   help="how the table counts: top label (default) or expected value (sum of probabilities); the "
                        "proposal always uses top labels")
    p.add_argument("--min-score", default=None, metavar="NORM|any",
                   help="only choose images whose MagFace norm is at least NORM (default: the project threshold; "
                        "'any': every scored face)")
    p.add_argument("--ignore-overrides", action="store_true",
                   help="treat manual accepts/rejects like any other image (default: manual rejects are never "
                        "chosen, manual accepts always stay)")
    p.add_argument("--apply", action="store_true", help="apply the proposal (one undoable action)")
    p.set_defaults(func=run_balance)


def _parse_size(text: str) -> int | None:
    if str(text).strip().lower() in ("max", "", "none"):
        return None
    try:
        n = int(text)
    except ValueError:
        raise FaceQCError(f"--size must be a whole number or 'max', not {text!r}.") from None
    if n < 0:
        raise FaceQCError("--size must not be negative.")
    return n


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def format_stats(stats) -> str:
    from ..engine.balance import group_name

    def num(x):
        return str(int(round(x))) if stats.mode == "top" else f"{x:.1f}"

    t = stats.joint
    rows = [[group_name(g), num(a), f"{sa:.1%}", num(c), f"{sc:.1%}"]
            for g, a, sa, c, sc in zip(t.groups, t.all, t.share_all, t.accepted, t.share_accepted)]
    rows.append(["total", num(t.n_all), "", num(t.n_accepted), ""])
    how = "top label" if stats.mode == "top" else "expected value"
    conf = f", below {stats.min_conf:g} = uncertain" if stats.min_conf > 0 else ""
    return f"Groups by {','.join(stats.by)} ({how}{conf}):\n" + _table(
        ["group", "all", "share", "accepted", "share"], rows)


def format_proposal(prop) -> str:
    rows = []
    for g in prop.groups:
        missing = "" if not g.shortfall and not g.over else (
            ("?" if g.shortfall is None else (f"{g.shortfall}" if g.shortfall else ""))
            + (f" ({g.over} manual too many)" if g.over else ""))
        rows.append([g.name, str(g.available), str(g.current), str(g.target), str(g.would_accept),
                     str(g.would_reject), missing.strip()])
    rows.append(["(no group)", "", "", str(len(prop.outside_kept_ids)), "", str(prop.outside_rejected), ""])
    head = f"Proposal ({prop.target.describe()}; manual decisions " + (
        "kept" if prop.keep_overrides else "ignored") + "):"
    return head + "\n" + _table(["group", "have", "accepted now", "target", "would accept", "would reject",
                                 "missing"], rows) + "\n" + prop.message


def run_balance(args: argparse.Namespace) -> int:
    from ..engine.balance import (
        candidates_from_snapshot, parse_by, parse_constraint, parse_target, propose, snapshot_stats,
    )
    from ..engine.store import Project

    path = Path(args.project)
    if not path.is_file():
        raise FaceQCError(f"project file not found: {path}")
    by = parse_by(args.by)
    size = _parse_size(args.size)
    if not 0.0 <= args.min_conf <= 1.0:
        raise FaceQCError("--min-conf must be between 0 and 1.")
    constraints = tuple(parse_constraint(c) for c in args.require)
    with Project.open(path, readonly=not args.apply) as project:
        threshold = float(project.threshold)
        if args.min_score is None:
            min_score = threshold
        elif str(args.min_score).lower() == "any":
            min_score = None
        else:
            try:
                min_score = float(args.min_score)
            except ValueError:
                raise FaceQCError(f"--min-score must be a number or 'any', not {args.min_score!r}.") from None
        snap = project.snapshot()
        stats = snapshot_stats(snap, threshold, by=by, mode=args.mode, min_conf=args.min_conf)
        print(format_stats(stats))
        print()
        cands = candidates_from_snapshot(snap, threshold, by=by, min_conf=args.min_conf, min_score=min_score,
                                         not_manual=project.balance_made_overrides())
        target = parse_target(args.target, cands.groups, constraints)
        prop = propose(cands, target, size=size, keep_overrides=not args.ignore_overrides)
        print(format_proposal(prop))
        if not prop.feasible:
            if args.apply:
                print("faceqc: nothing applied: the target cannot be met.", file=sys.stderr)
            return 1
        if args.apply:
            changes = prop.changes()
            if not changes:
                print("Nothing to change: the accepted set already is the proposal.")
                return 0
            description = (f"Balance by {','.join(by)}: accept {len(prop.accept_ids)}, "
                           f"reject {len(prop.reject_ids)}")
            project.apply_overrides(changes, description, source="balance")
            print(f"Applied as one undoable action: {len(prop.accept_ids)} accepted, "
                  f"{len(prop.reject_ids)} rejected.")
    return 0
