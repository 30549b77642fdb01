"""`faceqc models [list|download|path]`: which weight files are installed, where they are looked for, fetching them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine import download, registry
from ..engine.errors import DownloadError


def register(sub) -> None:
    p = sub.add_parser(
        "models", help="list, download and locate the weight files",
        description="Without a subcommand: list every weight file, whether it is installed and verified.")
    p.add_argument("--models-dir", metavar="DIR", help="folder with the weight files (searched first)")
    p.set_defaults(func=run_list)
    msub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")

    ls = msub.add_parser("list", help="list the weight files (the default)")
    # SUPPRESS: the option may be given before or after the subcommand without one overwriting the other with None.
    ls.add_argument("--models-dir", metavar="DIR", default=argparse.SUPPRESS, help="folder searched first")
    ls.set_defaults(func=run_list)

    dl = msub.add_parser("download", help="download weight files (all by default), verified by sha256",
                         description="Download weight files into the user data dir (or --models-dir). Files already "
                                     "installed and verified are skipped; interrupted downloads resume.")
    dl.add_argument("keys", nargs="*", metavar="KEY", help=f"models to fetch: {', '.join(registry.MODELS)} (default all)")
    dl.add_argument("--models-dir", metavar="DIR", default=argparse.SUPPRESS,
                    help="destination folder (default: the user data dir)")
    dl.add_argument("--url", metavar="URL", help="download from this URL instead (mirrors; one KEY only)")
    dl.add_argument("--timeout", type=float, default=30, metavar="S", help="network timeout in seconds (default 30)")
    dl.set_defaults(func=run_download)

    pa = msub.add_parser("path", help="print the folders searched for weight files, in order")
    pa.add_argument("--models-dir", metavar="DIR", default=argparse.SUPPRESS, help="folder searched first")
    pa.set_defaults(func=run_path)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _size(spec: registry.ModelSpec) -> str:
    if spec.size_bytes:
        return f"{spec.size_bytes / 1e6:.1f} MB"
    return f"~{spec.approx_mb:g} MB"


def run_list(args: argparse.Namespace) -> int:
    models_dir = getattr(args, "models_dir", None)
    statuses = download.model_status(models_dir)
    files = [["KEY", "FILE", "SIZE", "STATUS", "FOUND AT"]]
    about = [["KEY", "SHA256", "PROVIDES", "LICENCE"]]
    for st in statuses:
        spec = st.spec
        names = " | ".join(spec.filenames)
        files.append([st.key, names, _size(spec), st.describe(), str(st.path) if st.path else "-"])
        if st.hash_source == "official":
            sha = st.expected_sha256
        elif st.hash_source == "recorded":
            sha = f"{st.expected_sha256} (not published; recorded at first download)"
        else:
            sha = "not published (recorded on first download)"
        about.append([st.key, sha, spec.provides, spec.licence])
    print(_table(files))
    print()
    print(_table(about))
    print()
    print("Searched, in order:")
    for i, d in enumerate(registry.search_dirs(models_dir), 1):
        print(f"  {i}. {d}{'' if d.is_dir() else '  (does not exist)'}")
    missing = [st.key for st in statuses if not st.found]
    if missing:
        print(f"\nMissing: {', '.join(missing)}. Get them with `faceqc models download {' '.join(missing)}`.")
    custom = [st.key for st in statuses if st.custom]
    if custom:
        print(f"Custom (sha256 differs): {', '.join(custom)}. Results are computed with those files as they are.")
    return 0


def run_path(args: argparse.Namespace) -> int:
    for d in registry.search_dirs(getattr(args, "models_dir", None)):
        print(d)
    return 0


def run_download(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    keys = list(dict.fromkeys(args.keys)) or list(registry.MODELS)
    unknown = [k for k in keys if k not in registry.MODELS]
    if unknown:
        print(f"faceqc: error: unknown model(s) {', '.join(unknown)}; known: {', '.join(registry.MODELS)}",
              file=sys.stderr)
        return 2
    if args.url and len(keys) != 1:
        print("faceqc: error: --url needs exactly one KEY (it replaces that model's source)", file=sys.stderr)
        return 2
    dest = getattr(args, "models_dir", None)
    failed = []
    for key in keys:
        st = download.status_of(key, dest)
        elsewhere = dest is not None and st.path is not None and \
            st.path.parent.resolve() != Path(dest).expanduser().resolve()
        if st.verified and not elsewhere:  # an explicit destination is filled even when another folder has the file
            print(f"{key}: already installed ({st.path}, {st.describe()})")
            continue
        if st.found and not elsewhere:
            print(f"{key}: {st.path} is {st.describe()}; downloading the reference file", file=sys.stderr)
        bar = tqdm(desc=key, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, dynamic_ncols=True,
                   disable=None, total=st.spec.size_bytes)

        def progress(done: int, total: int | None, bar=bar) -> None:
            if total is not None and bar.total != total:
                bar.total = total
            if done < bar.n:  # the server could not resume: the bar restarts with the file
                bar.reset(total=total)
            bar.update(done - bar.n)

        def message(msg: str, bar=bar) -> None:
            bar.write(f"{key}: {msg}", file=sys.stderr)

        try:
            path = download.download_model(key, dest_dir=dest, progress=progress, url=args.url,
                                           timeout=args.timeout, on_message=message)
        except DownloadError as e:
            bar.close()
            print(f"faceqc: {key}: error: {e}", file=sys.stderr)
            failed.append(key)
            continue
        except KeyboardInterrupt:
            bar.close()
            print(f"faceqc: {key}: interrupted; the partial download is kept and resumes next time", file=sys.stderr)
            raise
        bar.close()
        print(f"{key}: installed {path}")
        used = registry.find_model_file(key, dest)
        if used is not None and used.resolve() != path.resolve():
            print(f"faceqc: {key}: warning: {used} is found first (folders are searched in the order `faceqc models "
                  f"path` lists), so it is still the file scoring uses; move it away to use the download.",
                  file=sys.stderr)
    if failed:
        print(f"faceqc: {len(failed)} of {len(keys)} downloads failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
