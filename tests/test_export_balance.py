"""Issue 6 item 4: every export carries a balance report (CSV + PNG) of the exported set."""

from __future__ import annotations

import csv
from collections import Counter

from PIL import Image
from test_export import proj  # noqa: F401  (fixture)

from faceqc_gui.engine.export import export_project


def test_export_writes_a_balance_report_of_the_exported_images(proj, tmp_path):  # noqa: F811
    p, _src, results, expected = proj
    target = tmp_path / "out"
    summary = export_project(p, target)
    assert summary.exported == len(expected)
    with open(target / "balance_report.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows, "empty balance report"
    # Independent count: top race7 x gender of each exported image's primary (largest) face.
    want = Counter()
    for path in expected:
        faces = results[path].faces
        if faces and faces[0].fairface:
            face = max(faces, key=lambda fr: fr.detection.area)
            want[(face.fairface["race7_top"], face.fairface["gender_top"])] += 1
    got = {r["group"]: float(r["accepted_count"]) for r in rows if r["table"] == "race7 x gender"}
    for (race, gender), n in want.items():
        assert got[f"{race} / {gender}"] == n
    assert sum(got.values()) == sum(want.values()) + got.get("unknown / unknown", 0)
    with Image.open(target / "balance_report.png") as im:
        assert im.width > 300 and im.height > 100
