"""How long the book takes to build: cold (every notebook executed), warm (nothing changed), per notebook, and
the same on a busy machine.

    python benchmarks/book_build.py [--busy 1] [--out /tmp/book-bench] [--write-readme]

Builds the book from this checkout into ``--out`` (not the repository's own ``_build``): once cold, with an empty
execution cache, then once warm. ``--busy N`` keeps N other CPU-bound processes running during both builds (a
reader's laptop is never idle). Prints the wall times and each notebook's execution time from Jupyter Book's
execution cache (``jupyter-cache``). ``--write-readme`` measures twice, idle and busy, and writes both into the
README between its ``<!-- book-times -->`` markers (about 12 minutes on 2 cores). Targets: every notebook at most
90 s on 2 quiet cores, the whole book cold at most 6 minutes, warm at most 30 s.
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
        page = Path(uri)  # solutions/<id>/<id>.ipynb, or a page such as book/background.md
        name = page.parent.name if page.suffix == ".ipynb" else f"{page.parent.name}/{page.name}"
        times[name] = json.loads(data)["execution_seconds"]
    return dict(sorted(times.items()))


def measure(out: Path, busy: int) -> dict:
    """Cold then warm build into ``out`` with ``busy`` CPU-bound processes running; the times."""
    shutil.rmtree(out, ignore_errors=True)
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(busy)]
    for s in spinners:
        s.start()
    try:
        cold = build(out)
        warm = build(out)
    finally:
        for s in spinners:
            s.terminate()
    return {"busy": busy, "cold": cold, "warm": warm, "times": notebook_times(out)}


def table(runs: list[dict]) -> str:
    def load(run):
        n = run["busy"]
        return f"with {n} other CPU-bound process{'es' if n != 1 else ''}" if n else f"{os.cpu_count()} idle cores"

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
    return "\n".join(lines) + f"\n\nMeasured with `python benchmarks/book_build.py` on {machine}."


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--busy", type=int, default=0, help="CPU-bound processes to run during the builds")
    p.add_argument("--out", type=Path, default=Path("/tmp/book-bench"))
    p.add_argument("--write-readme", action="store_true",
                   help="measure idle and with --busy (at least 1) processes, and write both into README.md")
    args = p.parse_args(argv)
    loads = [0, max(args.busy, 1)] if args.write_readme else [args.busy]
    runs = [measure(args.out / f"busy{n}", n) for n in loads]
    text = table(runs)
    print(text)
    for run in runs:
        slowest = max(run["times"], key=run["times"].get)
        print(f"\n{run['busy']} busy: slowest {slowest} {run['times'][slowest]:.1f} s (target <= 90); cold "
              f"{run['cold']:.0f} s (target <= 360); warm {run['warm']:.0f} s (target <= 30)")
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
