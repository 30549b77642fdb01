"""Project store speed at 100k images, next to a naive baseline that rewrites one JSON file per change.

    python bench/store.py                      # 100k images (about 1.5 faces each), results table on stdout
    python bench/store.py --images 20000 --json out.json
    python bench/store.py --no-baseline        # the store alone (the baseline takes ~15 min at 100k)

No models needed: records are generated (seeded) with the shapes the pipeline produces (512-d embedding, 40 CelebA
probabilities, FairFace race7/race4/gender/age). Every image is a real (tiny) file in a temp folder, so storing
results stats and hashes it as in real use, and the export places real symlinks.

Measured for the store (faceqc_gui.engine.store) and the baseline (all records in one JSON file, rewritten with
an atomic rename after each change, which is what a simple tool does):
  insert          store all results in batches of 1000 (store: one transaction per batch; baseline: one rewrite)
  reopen          open the project and build the columnar snapshot (baseline: json.load + the same arrays)
  threshold       change the threshold (an undoable action) and re-decide every image
  override 1      accept one image (one undoable action)
  override 10k    reject 10k images in one action
  query           accepted images with Smiling >= 0.5 and a female top label, sorted by score
  export          manifests (csv, json, CelebA list, FairFace csv) + symlinks of the accepted set
                  (baseline: one CSV of paths and faces + symlinks)
  (store only) re-decide only: Snapshot.decide over all images; snapshot; counts
Generation of the records is not timed. The store runs first and is closed before the baseline loads, so the
baseline's millions of Python objects do not slow the store's numbers (garbage collection).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from faceqc_gui.engine.export import export_project  # noqa: E402
from faceqc_gui.engine.labels import CELEBA_ATTRIBUTES, FAIRFACE_HEADS  # noqa: E402
from faceqc_gui.engine.records import Detection, FaceResult, ImageResult  # noqa: E402
from faceqc_gui.engine.store import Filter, Project  # noqa: E402

BATCH = 1000
MODELS = {k: {"file": f"{k}.pth", "sha256": k[0] * 64, "official": True}
          for k in ("detector", "magface", "celeba", "fairface")}


def generate(paths: list[str], rng: np.random.Generator) -> list[ImageResult]:
    out = []
    n_faces = rng.choice([0, 1, 1, 1, 2, 3], size=len(paths))
    for path, n in zip(paths, n_faces):
        faces = []
        for i in range(int(n)):
            s = float(rng.uniform(30, 300))
            box = np.array([10, 10, 10 + s, 10 + 1.2 * s], np.float32)
            lms = rng.uniform(10, 10 + s, size=(5, 2)).astype(np.float32)
            emb = rng.normal(size=512).astype(np.float32)
            norm = float(rng.normal(22, 5))
            emb *= norm / np.linalg.norm(emb)
            celeba = dict(zip(CELEBA_ATTRIBUTES, rng.uniform(0, 1, 40).tolist()))
            ff = {}
            for head, labels in FAIRFACE_HEADS.items():
                p = rng.dirichlet(np.ones(len(labels)))
                ff[head] = dict(zip(labels, p.tolist()))
                ff[f"{head}_top"] = labels[int(np.argmax(p))]
            faces.append(FaceResult(i, Detection(box, lms, float(rng.uniform(0.8, 1))), norm, emb, celeba, ff))
        out.append(ImageResult(path, 640, 480, faces, models={k: dict(v) for k, v in MODELS.items()}))
    return out


# -- the baseline --------------------------------------------------------------------------------------------------

def _record(r: ImageResult) -> dict:
    """What a simple tool keeps per image (no embedding: it would make the JSON ~3x larger still)."""
    return {"path": r.path, "width": r.width, "height": r.height, "error": r.error, "models": r.models,
            "faces": [{"box": f.detection.box.tolist(), "landmarks": f.detection.landmarks.tolist(),
                       "det_score": f.detection.score, "norm": f.magface_norm, "celeba": f.celeba,
                       "fairface": f.fairface} for f in r.faces]}


class JsonBaseline:
    def __init__(self, path: Path):
        self.path = path
        self.state = {"images": [], "overrides": {}, "threshold": 20.0, "history": []}

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(self.state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def load(self) -> None:
        with open(self.path) as f:
            self.state = json.load(f)

    def arrays(self):
        imgs = self.state["images"]
        score = np.array([max(im["faces"], key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
                          ["norm"] if im["faces"] else np.nan for im in imgs], np.float32)
        ov = np.array([self.state["overrides"].get(im["path"], 0) for im in imgs], np.int8)
        return score, ov

    def accepted(self) -> list[int]:
        score, ov = self.arrays()
        with np.errstate(invalid="ignore"):
            acc = (ov > 0) | ((ov == 0) & (score >= self.state["threshold"]))
        return np.flatnonzero(acc).tolist()


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def batches(paths: list[str]):
    """The same generated records on every call (seeded per batch), so both phases store identical data."""
    for b, start in enumerate(range(0, len(paths), BATCH)):
        yield generate(paths[start:start + BATCH], np.random.default_rng(b))


def bench_store(paths: list[str], src: Path, work: Path) -> tuple[dict, dict]:
    res: dict[str, float] = {}
    proj_path = work / "bench.faceqc"
    n = len(paths)
    t = 0.0
    with Project.create(proj_path) as p:
        p.add_folder(src)
        for k, batch in enumerate(batches(paths)):
            t += timed(lambda: p.store_results(batch))[0]
            print(f"\rstore insert {(k + 1) * BATCH}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    res["insert"] = t

    def reopen():
        proj = Project.open(proj_path)
        return proj, proj.snapshot()
    res["reopen"], (p, snap) = timed(reopen)

    def threshold():
        p.set_threshold(21.5)
        return snap.decide(21.5)
    res["threshold"] = timed(threshold)[0]
    res["re-decide only"] = timed(lambda: snap.decide(21.7))[0]
    res["override 1"] = timed(lambda: p.set_override([int(snap.ids[n // 2])], "accept"))[0]
    many = snap.ids[: min(10_000, n)]
    res["override 10k"] = timed(lambda: p.set_override(many, "reject"))[0]
    res["undo 10k"] = timed(p.undo)[0]
    res["query"], hits = timed(lambda: p.query(QUERY, sort="score"))
    res["snapshot"] = timed(p.snapshot)[0]
    res["counts"] = timed(p.counts)[0]
    res["export"], summary = timed(lambda: export_project(p, work / "export", mode="symlink"))
    p.close()
    shutil.rmtree(work / "export", ignore_errors=True)
    info = {"store_mb": os.path.getsize(proj_path) / 1e6, "query_hits": len(hits), "exported": summary.exported}
    return res, info


QUERY = Filter(status={"accepted"}, celeba={"Smiling": (0.5, 1.0)}, fairface={"gender": "Female"})


def bench_json(paths: list[str], work: Path) -> tuple[dict, dict]:
    res: dict[str, float] = {}
    n = len(paths)
    base = JsonBaseline(work / "baseline.json")
    t = 0.0
    for k, batch in enumerate(batches(paths)):
        def insert():
            base.state["images"].extend(_record(r) for r in batch)
            base.save()
        t += timed(insert)[0]
        print(f"\rJSON insert {(k + 1) * BATCH}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    res["insert"] = t
    base.state = None

    def reopen():
        base.load()
        return base.arrays()
    res["reopen"] = timed(reopen)[0]

    def threshold():
        base.state["threshold"] = 21.5
        base.state["history"].append(["threshold", 20.0, 21.5])
        base.save()
        return base.accepted()
    res["threshold"] = timed(threshold)[0]

    def one():
        base.state["overrides"][paths[n // 2]] = 1
        base.save()
    res["override 1"] = timed(one)[0]
    many = paths[: min(10_000, n)]

    def bulk():
        for path in many:
            base.state["overrides"][path] = -1
        base.save()
    res["override 10k"] = timed(bulk)[0]

    def undo():
        for path in many:
            base.state["overrides"].pop(path, None)
        base.state["overrides"][paths[n // 2]] = 1
        base.save()
    res["undo 10k"] = timed(undo)[0]

    def query():
        acc = set(base.accepted())
        out = []
        for i, im in enumerate(base.state["images"]):
            if i not in acc or not im["faces"]:
                continue
            f = max(im["faces"], key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
            if f["celeba"]["Smiling"] >= 0.5 and f["fairface"]["gender_top"] == "Female":
                out.append((f["norm"], i))
        return [i for _, i in sorted(out, reverse=True)]
    res["query"], hits = timed(query)

    def export():
        out = work / "export_json"
        (out / "images").mkdir(parents=True)
        acc = base.accepted()
        with open(out / "manifest.csv", "w", newline="") as f:
            w = csv.writer(f)
            for i in acc:
                im = base.state["images"][i]
                w.writerow([im["path"], json.dumps(im["faces"])])
                os.symlink(im["path"], out / "images" / f"{i}.jpg")
        return len(acc)
    res["export"], exported = timed(export)
    return res, {"json_mb": os.path.getsize(base.path) / 1e6, "query_hits": len(hits), "exported": exported}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--json", metavar="OUT", help="also write the numbers here")
    ap.add_argument("--no-baseline", action="store_true", help="skip the (slow) JSON baseline")
    args = ap.parse_args()
    n = args.images
    work = Path(tempfile.mkdtemp(prefix="faceqc-bench-store-"))
    try:
        src = work / "images"
        paths = []
        for d in range(0, n, 1000):
            sub = src / f"d{d // 1000:03d}"
            sub.mkdir(parents=True)
            for i in range(d, min(n, d + 1000)):
                p = sub / f"img{i:06d}.jpg"
                p.write_bytes(i.to_bytes(8, "little"))
                paths.append(str(p))
        # Separate phases: the baseline's millions of Python objects would slow the store's phase (GC) otherwise.
        store_res, store_info = bench_store(paths, src, work)
        json_res, json_info = ({}, {}) if args.no_baseline else bench_json(paths, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if json_info:
        assert json_info["query_hits"] == store_info["query_hits"], "the two implementations disagree"
        assert json_info["exported"] == store_info["exported"], "the two implementations disagree"
    print(f"\n{n} images, {store_info['exported']} accepted and exported, {store_info['query_hits']} query hits; "
          f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"project file {store_info['store_mb']:.0f} MB (with float16 embeddings)"
          + (f"; baseline JSON {json_info['json_mb']:.0f} MB (without embeddings)" if json_info else "") + "\n")
    print(f"{'operation':<16}{'store (s)':>12}{'JSON baseline (s)':>20}{'ratio':>10}")
    for k, s in store_res.items():
        j = json_res.get(k)
        print(f"{k:<16}{s:>12.3f}" + (f"{j:>20.3f}{j / s:>9.1f}x" if j is not None else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"images": n, "store": store_res, "json": json_res,
                                               "store_info": store_info, "json_info": json_info}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
