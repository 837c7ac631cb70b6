"""How long the book takes to build: cold (every notebook executed), warm (nothing changed), per notebook, and
the same on a busy machine.

    python benchmarks/book_build.py [--busy 1] [--out /tmp/book-bench] [--write-readme]

Builds the book from this checkout into ``--out`` (not the repository's own ``_build``): once cold, with an empty
execution cache, then once warm. ``--busy N`` keeps N other CPU-bound processes running during both builds (a
reader's laptop is never idle). Prints the wall times and each notebook's execution time from Jupyter Book's
execution cache (``jupyter-cache``), and with ``--write-readme`` writes the table into the README between its
``<!-- book-times -->`` markers. Targets: every notebook at most 90 s on 2 quiet cores, the whole book cold at
most 6 minutes, warm at most 30 s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKERS = ("<!-- book-times -->", "<!-- /book-times -->")


def _spin() -> None:  # pragma: no cover (a busy process)
    while True:
        pass


def build(out: Path) -> float:
    start = time.perf_counter()
    command = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT), "--path-output", str(out),
               "-W", "-n", "--keep-going", "-q"]
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"the build failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def notebook_times(out: Path) -> dict[str, float]:
    """{page: execution seconds} from the build's execution cache."""
    db = out / "_build" / ".jupyter_cache" / "global.db"
    with sqlite3.connect(db) as con:
        rows = con.execute("select uri, data from nbcache").fetchall()
    times = {}
    for uri, data in rows:
        page = Path(uri).resolve().relative_to(ROOT)
        times[str(page.parent.name if page.suffix == ".ipynb" else page)] = json.loads(data)["execution_seconds"]
    return dict(sorted(times.items()))


def table(times: dict[str, float], cold: float, warm: float, busy: int) -> str:
    lines = ["| page | executes in (s) |", "|---|---:|"]
    lines += [f"| `{page}` | {seconds:.1f} |" for page, seconds in times.items()]
    lines.append(f"| **all pages, executing** | **{sum(times.values()):.0f}** |")
    machine = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    load = f", with {busy} other CPU-bound process{'es' if busy != 1 else ''} running" if busy else ", otherwise idle"
    return ("\n".join(lines) + f"\n\nWhole build: {cold:.0f} s cold (empty execution cache), {warm:.0f} s warm "
            f"(nothing changed); measured by `python benchmarks/book_build.py` on {machine}{load}.")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--busy", type=int, default=0, help="CPU-bound processes to run during the builds")
    p.add_argument("--out", type=Path, default=Path("/tmp/book-bench"))
    p.add_argument("--write-readme", action="store_true")
    args = p.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for s in spinners:
        s.start()
    try:
        cold = build(args.out)
        warm = build(args.out)
    finally:
        for s in spinners:
            s.terminate()
    times = notebook_times(args.out)
    text = table(times, cold, warm, args.busy)
    print(text)
    slowest = max(times, key=times.get)
    print(f"\nslowest: {slowest} {times[slowest]:.1f} s (target <= 90); cold {cold:.0f} s (target <= 360); "
          f"warm {warm:.0f} s (target <= 30)")
    if args.write_readme:
        readme = ROOT / "README.md"
        old = readme.read_text()
        pattern = re.compile(re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1]), re.S)
        if not pattern.search(old):
            raise SystemExit(f"README.md has no {MARKERS[0]} ... {MARKERS[1]} block")
        readme.write_text(pattern.sub(lambda _: f"{MARKERS[0]}\n{text}\n{MARKERS[1]}", old))
        print("wrote the table into README.md")
    return {"cold": cold, "warm": warm, "times": times}


if __name__ == "__main__":
    main()
