"""Demographic balance: statistics (``balance_stats``), balanced selection (``balance_select``) and the export report.

The report is a CSV and a PNG bar chart of a ``GroupStats`` (accepted = the exported set, next to all scored images),
drawn with Pillow so that neither Qt nor matplotlib is needed.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .balance_select import (
    Candidates, GroupPlan, Proposal, candidates_from_snapshot, propose,
)
from .balance_stats import (
    MODES, UNCERTAIN, UNKNOWN, GroupStats, GroupTable, group_mask, group_stats, head_labels, joint_codes, parse_by,
    snapshot_population, snapshot_probs, snapshot_stats, top_codes,
)
from .balance_target import (
    AttributeConstraint, Target, group_name, match_group, parse_constraint, parse_target,
)

__all__ = [
    "AttributeConstraint", "Candidates", "GroupPlan", "GroupStats", "GroupTable", "MODES", "Proposal", "Target",
    "UNCERTAIN", "UNKNOWN", "candidates_from_snapshot", "group_mask", "group_name", "group_stats", "head_labels",
    "joint_codes", "match_group", "parse_by", "parse_constraint", "parse_target", "propose", "render_chart",
    "report_rows", "snapshot_population", "snapshot_probs", "snapshot_stats", "top_codes", "write_balance_report",
    "ACCEPTED_COLOUR", "ALL_COLOUR", "REPORT_COLUMNS",
]

REPORT_COLUMNS = ["table", "group", "all_count", "all_share", "accepted_count", "accepted_share", "mode", "min_conf"]
ALL_COLOUR = (158, 166, 178)  # not a neutral grey: anti-aliased black text never has this colour
ACCEPTED_COLOUR = (38, 110, 200)


def _fmt_count(x: float, mode: str) -> str:
    return str(int(round(x))) if mode == "top" else f"{x:.3f}"


def report_rows(stats: GroupStats) -> list[dict]:
    rows = []
    for name, table in stats.tables():
        for r in table.rows():
            rows.append({
                "table": name, "group": group_name(r["group"]),
                "all_count": _fmt_count(r["all"], stats.mode), "all_share": f"{r['all_share']:.6f}",
                "accepted_count": _fmt_count(r["accepted"], stats.mode),
                "accepted_share": f"{r['accepted_share']:.6f}", "mode": stats.mode, "min_conf": f"{stats.min_conf:g}",
            })
    return rows


def write_balance_report(folder, stats: GroupStats, stem: str = "balance_report") -> tuple[Path, Path]:
    """Write ``<stem>.csv`` and ``<stem>.png`` into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = folder / f"{stem}.csv", folder / f"{stem}.png"
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=REPORT_COLUMNS)
        w.writeheader()
        w.writerows(report_rows(stats))
    os.replace(tmp, csv_path)
    image = render_chart(stats)
    tmp = png_path.with_name(png_path.name + ".tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, png_path)
    return csv_path, png_path


# Chart layout (pixels). Bars of one table share a scale: the longest bar is the table's largest share.
_W, _LABEL_W, _BAR_W, _ROW_H, _BAR_H, _PAD = 1040, 280, 460, 30, 11, 16


def chart_bar_scale(table: GroupTable) -> float:
    """Pixels per unit share for a table's bars (so a bar is share x scale pixels long)."""
    top = max(float(table.share_all.max(initial=0.0)), float(table.share_accepted.max(initial=0.0)))
    return _BAR_W / top if top > 0 else 0.0


def render_chart(stats: GroupStats):
    """A PIL image: per table, a row per group with two bars (all scored images, grey; accepted, blue)."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=14)
        bold = ImageFont.load_default(size=17)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        font = bold = ImageFont.load_default()
    tables = stats.tables()
    height = _PAD + 44 + sum(_PAD + 24 + _ROW_H * len(t.groups) for _, t in tables) + _PAD
    img = Image.new("RGB", (_W, height), "white")
    d = ImageDraw.Draw(img)
    how = "top label" if stats.mode == "top" else "expected value"
    conf = f", predictions below {stats.min_conf:.0%} counted as uncertain" if stats.min_conf > 0 else ""
    d.text((_PAD, _PAD), f"Balance: {stats.n_accepted} accepted of {stats.n_all} scored images ({how}{conf})",
           fill="black", font=bold)
    y = _PAD + 26
    d.rectangle((_PAD, y, _PAD + 14, y + _BAR_H), fill=ALL_COLOUR)
    d.text((_PAD + 20, y - 3), "all scored", fill="black", font=font)
    d.rectangle((_PAD + 130, y, _PAD + 144, y + _BAR_H), fill=ACCEPTED_COLOUR)
    d.text((_PAD + 150, y - 3), "accepted", fill="black", font=font)
    d.text((_PAD + _LABEL_W + _BAR_W + 10, y - 3), "all (share)  /  accepted (share)", fill="black", font=font)
    y = _PAD + 44
    for name, table in tables:
        y += _PAD
        d.text((_PAD, y), name, fill="black", font=bold)
        y += 24
        scale = chart_bar_scale(table)
        for i, g in enumerate(table.groups):
            d.text((_PAD, y + 6), group_name(g), fill="black", font=font)
            x0 = _PAD + _LABEL_W
            for k, (share, colour) in enumerate(((table.share_all[i], ALL_COLOUR),
                                                 (table.share_accepted[i], ACCEPTED_COLOUR))):
                by = y + 3 + k * (_BAR_H + 2)
                length = int(round(float(share) * scale))
                if length > 0:
                    d.rectangle((x0, by, x0 + length - 1, by + _BAR_H - 1), fill=colour)
            d.text((x0 + _BAR_W + 10, y + 6),
                   f"{_fmt_count(table.all[i], stats.mode)} ({table.share_all[i]:.1%})  /  "
                   f"{_fmt_count(table.accepted[i], stats.mode)} ({table.share_accepted[i]:.1%})",
                   fill="black", font=font)
            y += _ROW_H
    return img
