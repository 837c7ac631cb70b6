"""How long the book takes to build: cold (every notebook executed), warm (nothing changed), per notebook, and
the same on a busy machine, and with the notebooks executed several at a time.

    python benchmarks/book_build.py [--busy 1] [--jobs 2] [--out /tmp/book-bench] [--write-readme]

Builds the reader edition from this checkout into ``--out`` (not the repository's own ``_build``) with
``python -m autograder book --edition reader --jobs N``: once cold, with an empty execution cache, then once warm.
``--jobs 1`` (the default) is Jupyter Book's own build, one notebook after the other; ``--jobs N`` executes N
notebooks at a time before it. ``--busy N`` keeps N other CPU-bound processes running during both builds (a reader's
laptop is never idle). Prints the wall times and each notebook's execution time from Jupyter Book's execution cache
(``jupyter-cache``). ``--write-readme`` measures three times, one at a time idle and busy (at least 1), and two at a
time idle (or ``--jobs``), and writes the table into the README between its ``<!-- book-times -->`` markers (about
15 minutes on 2 cores). Targets: every notebook at most 90 s on 2 quiet cores, one at a time; the whole book cold at
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
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKERS = ("<!-- book-times -->", "<!-- /book-times -->")


def _spin() -> None:  # pragma: no cover (a busy process)
    while True:
        pass


def build(out: Path, jobs: int = 1) -> float:
    start = time.perf_counter()
    command = [sys.executable, "-m", "autograder", "book", "--edition", "reader", "--path-output", str(out),
               "--jobs", str(jobs)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
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
        page = Path(uri)  # solutions/<id>/<id>.ipynb, or a page such as book/background.md
        name = page.parent.name if page.suffix == ".ipynb" else f"{page.parent.name}/{page.name}"
        times[name] = json.loads(data)["execution_seconds"]
    return dict(sorted(times.items()))


def measure(out: Path, busy: int, jobs: int = 1) -> dict:
    """Cold then warm build into ``out`` with ``busy`` CPU-bound processes running and ``jobs`` notebooks executed
    at a time; the times."""
    shutil.rmtree(out, ignore_errors=True)
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(busy)]
    for s in spinners:
        s.start()
    try:
        cold = build(out, jobs)
        warm = build(out, jobs)
    finally:
        for s in spinners:
            s.terminate()
    return {"busy": busy, "jobs": jobs, "cold": cold, "warm": warm, "times": notebook_times(out)}


def table(runs: list[dict]) -> str:
    def load(run):
        n, jobs = run["busy"], run.get("jobs", 1)
        text = f"with {n} other CPU-bound process{'es' if n != 1 else ''}" if n else f"{os.cpu_count()} idle cores"
        return f"{jobs} at a time (`--jobs {jobs}`), {text}" if jobs > 1 else text

    lines = ["| page | " + " | ".join(f"executes in (s), {load(r)}" for r in runs) + " |",
             "|---|" + "---:|" * len(runs)]
    for page in runs[0]["times"]:
        lines.append(f"| `{page}` | " + " | ".join(f"{r['times'].get(page, float('nan')):.1f}" for r in runs) + " |")
    lines.append("| **all pages, executing** | " + " | ".join(f"**{sum(r['times'].values()):.0f}**" for r in runs)
                 + " |")
    lines.append("| **whole build, cold** (empty execution cache) | " + " | ".join(f"**{r['cold']:.0f}**" for r in runs)
                 + " |")
    lines.append("| **whole build, warm** (nothing changed) | " + " | ".join(f"**{r['warm']:.0f}**" for r in runs)
                 + " |")
    machine = f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    return "\n".join(lines) + "\n\n" + textwrap.fill(
        f"Measured with `python benchmarks/book_build.py --write-readme` on {machine}. The targets: at most 90 s "
        "per notebook (one at a time), 6 minutes cold, 30 s warm. Jupyter Book's per-cell timeout (300 s, "
        "`_config.yml`) is a safety net, several times the slowest notebook.", 118)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--busy", type=int, default=0, help="CPU-bound processes to run during the builds")
    p.add_argument("--jobs", type=int, default=1, help="notebooks executed at a time (--write-readme: the third "
                                                          "measurement's, at least 2)")
    p.add_argument("--out", type=Path, default=Path("/tmp/book-bench"))
    p.add_argument("--write-readme", action="store_true",
                   help="measure idle and with --busy (at least 1) processes, and write both into README.md")
    args = p.parse_args(argv)
    loads = [(0, 1), (max(args.busy, 1), 1), (0, max(args.jobs, 2))] if args.write_readme else \
        [(args.busy, args.jobs)]
    runs = [measure(args.out / f"busy{n}-jobs{jobs}", n, jobs) for n, jobs in loads]
    text = table(runs)
    print(text)
    for run in runs:
        slowest = max(run["times"], key=run["times"].get)
        print(f"\n{run['busy']} busy, {run['jobs']} at a time: slowest {slowest} {run['times'][slowest]:.1f} s "
              f"(target <= 90); cold {run['cold']:.0f} s (target <= 360); warm {run['warm']:.0f} s (target <= 30)")
    if args.write_readme:
        readme = ROOT / "README.md"
        old = readme.read_text()
        pattern = re.compile(re.escape(MARKERS[0]) + ".*?" + re.escape(MARKERS[1]), re.S)
        if not pattern.search(old):
            raise SystemExit(f"README.md has no {MARKERS[0]} ... {MARKERS[1]} block")
        readme.write_text(pattern.sub(lambda _: f"{MARKERS[0]}\n{text}\n{MARKERS[1]}", old))
        print("wrote the table into README.md")
    return runs


if __name__ == "__main__":
    main()
