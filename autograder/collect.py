"""``python -m autograder collect SOURCE``: import a class's submissions from a folder or a .zip (an LMS export).

Each notebook lands in ``<root>/autograder/submitted/<student>/<chapter>/<chapter>.ipynb``, where nbgrader and
``python -m autograder grade`` look for it.

**Whose is it?** SOURCE holds one entry per student: a folder named after the student (notebooks at any depth
inside, .zip files inside it are opened too), or a file ``<student>.ipynb`` / ``<student>.zip``, or a file
``<student>_<anything>.ipynb`` (the student is the part before the first underscore, as LMS exports name them).
A .zip whose only content is one folder of students is read from that folder. Names become safe student ids
(letters, digits and ``_ . @ + -``); two names that become the same id are reported and neither is placed.

**Which chapter?** From the notebook's content: the nbgrader ``grade_id`` of its cells, compared with each
chapter's instructor notebook in ``<root>/solutions/`` (students rename files; they rarely rebuild cells). Only
a notebook without nbgrader cells is placed by its file name, and one that is not even JSON too (so that
grading reports it as invalid). ``--chapter`` says which chapter every notebook should be.

**Zip safety:** nothing is extracted outside a temporary folder; entries with ``..`` or absolute paths,
symbolic links and encrypted entries are refused; there are caps on the number of entries, the size of each
extracted file and the total extracted (against zip bombs), counted on the bytes actually written.

Existing submissions are kept unless ``--force``. At the end: what was placed, what was skipped, and what
could not be placed and why. Exit status 0 when at least one notebook was placed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
import tempfile
import unicodedata
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from autograder.course import CommandError
from autograder.gradesheet import add_root_argument, course_root
from autograder.layout import CourseLayout
from autograder.notebook_model import CourseNotebook
from autograder.results import check_student_id
from llmcourse import registry

MAX_ENTRIES = 20_000  # entries in all zips of one collect, together
MAX_FILE_BYTES = 200 * 1024**2  # one extracted (or read) file
MAX_TOTAL_BYTES = 4 * 1024**3  # everything extracted by one collect
MAX_ZIP_DEPTH = 2  # the export itself, and a student's own .zip inside it
MIN_SIMILARITY = 0.5  # Jaccard similarity of grade_id sets needed to call a notebook a chapter's
JUNK_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini"}
CHUNK = 1024 * 1024


@dataclass
class Candidate:
    raw_student: str  # the name the student was found under
    path: Path  # the notebook, in SOURCE or in the temporary folder
    shown: str  # where it came from, for messages ("export.zip:alice/hw.ipynb")
    chapter: str = ""
    student: str = ""


@dataclass
class Outcome:
    placed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "where: why", for everything not placed
    renamed: dict[str, str] = field(default_factory=dict)  # raw student name -> the id it became

    def problem(self, shown: str, reason: str) -> None:
        self.problems.append(f"{shown}: {reason}")


@dataclass
class Budget:
    """What the zips of one collect may still extract, shared by nested zips."""

    entries: int = field(default_factory=lambda: MAX_ENTRIES)
    total_bytes: int = field(default_factory=lambda: MAX_TOTAL_BYTES)
    file_bytes: int = field(default_factory=lambda: MAX_FILE_BYTES)
    counter: int = 0  # names the temporary folders

    def folder(self, tmp: Path) -> Path:
        self.counter += 1
        path = tmp / f"z{self.counter}"
        path.mkdir()
        return path


# ---------------------------------------------------------------------------------------------------------------
# zips, safely


def is_junk(name: str) -> bool:
    """Files and folders an export or an OS adds that are never submissions (checkpoints, macOS metadata)."""
    return name.startswith(".") or name in JUNK_NAMES or name.endswith("-checkpoint.ipynb")


def safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path a zip entry may be extracted to, or None when it is absolute or climbs out (``..``)."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return PurePosixPath(*parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _wanted(path: PurePosixPath) -> bool:
    """Only notebooks and zips are extracted; everything else in an export is ignored."""
    return not any(is_junk(part) for part in path.parts) and path.suffix.lower() in (".ipynb", ".zip")


def _copy_capped(source, target: Path, budget: Budget) -> str:
    """Copy a zip member to ``target``, counting the bytes actually written; an error message or ''."""
    written = 0
    with open(target, "xb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > budget.file_bytes:
                return f"larger than {budget.file_bytes} bytes once extracted (a zip bomb?): not extracted"
            if written > budget.total_bytes:
                return "the export extracts to more than the total size cap (a zip bomb?): extraction stopped"
            out.write(chunk)
    budget.total_bytes -= written
    return ""


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: Budget) -> str:
    """Extract one member to ``target`` within the caps; an error message (and no file) or ''."""
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as source:
            why = _copy_capped(source, target, budget)
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError) as err:
        why = f"cannot be extracted ({err})"
    if why and not existed and target.is_file():  # remove what this entry wrote, never another entry's file
        target.unlink()
    return why


def _member_problem(info: zipfile.ZipInfo, path: PurePosixPath | None, seen: set[str], budget: Budget) -> str:
    """Why a zip entry is refused, or '' when it may be extracted."""
    if path is None:
        return "an absolute path or one with '..': refused"
    if _is_symlink(info):
        return "a symbolic link: refused"
    if info.flag_bits & 0x1:
        return "encrypted: refused"
    if str(path) in seen:
        return "a second entry with the same name: refused"
    if info.file_size > budget.file_bytes:
        return f"larger than {budget.file_bytes} bytes once extracted: not extracted"
    return ""


def _note_unwanted(path: PurePosixPath, dest: Path, outcome: Outcome, shown: str) -> None:
    """A file that is not extracted still shows whose it was: a student's folder is made (empty, so that
    "no notebook in it" is reported), a file at the top level is reported."""
    if any(is_junk(part) for part in path.parts):
        return
    if len(path.parts) == 1:
        outcome.problem(shown, f"not a notebook or a zip ({path.suffix or 'no extension'}): ignored")
    else:
        try:
            dest.joinpath(*path.parts[:-1]).mkdir(parents=True, exist_ok=True)
        except OSError:  # a file of that name is in the way: nothing to show then
            pass


def safe_extract(archive: Path, dest: Path, budget: Budget, outcome: Outcome, shown: str) -> bool:
    """Extract the notebooks and zips of ``archive`` into ``dest`` (and nowhere else); False if it is unusable."""
    dest = dest.resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        outcome.problem(shown, f"not a readable zip file ({err})")
        return False
    with zf:
        infos = zf.infolist()
        if len(infos) > budget.entries:
            outcome.problem(shown, f"{len(infos)} entries, more than the {budget.entries} still allowed "
                                   "(a zip bomb?): not extracted")
            return False
        budget.entries -= len(infos)
        seen: set[str] = set()
        for info in infos:
            if info.is_dir():
                continue
            path = safe_member_path(info.filename)
            if path is not None and not _wanted(path):
                _note_unwanted(path, dest, outcome, f"{shown}:{info.filename}")
                continue
            why = _member_problem(info, path, seen, budget)
            if why:
                outcome.problem(f"{shown}:{info.filename}", why)
                continue
            seen.add(str(path))
            target = dest.joinpath(*path.parts)
            if not target.resolve().is_relative_to(dest):  # a defence in depth: the path was checked above
                outcome.problem(f"{shown}:{info.filename}", "resolves outside the extraction folder: refused")
                continue
            why = _extract_member(zf, info, target, budget)
            if why:
                outcome.problem(f"{shown}:{info.filename}", why)
                if "total size" in why:
                    return True
    return True


# ---------------------------------------------------------------------------------------------------------------
# finding the students' notebooks


def student_of_file(stem: str) -> str:
    """``alice.ipynb`` -> alice; ``alice_hw4_final.ipynb`` -> alice (LMS exports prefix the student)."""
    return stem.split("_", 1)[0] if "_" in stem else stem


def _looks_like_chapter(name: str) -> bool:
    stem = Path(name).stem if name.lower().endswith((".ipynb", ".zip")) else name
    return bool(registry.CHAPTER_ID_RE.match(stem)) or stem in registry.CHAPTER_IDS


def unwrap(folder: Path) -> Path:
    """The folder of students inside an extracted export: descend while it holds just one folder of several
    entries, none of them named like a chapter (a single student's folder of chapters stays a student)."""
    while True:
        entries = [e for e in folder.iterdir() if not is_junk(e.name)]
        if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink():
            return folder
        inner = [e for e in entries[0].iterdir() if not is_junk(e.name)]
        if len(inner) < 2 or any(_looks_like_chapter(e.name) for e in inner):
            return folder
        folder = entries[0]


def notebooks_under(folder: Path, prefix: str, tmp: Path, budget: Budget, outcome: Outcome, depth: int
                    ) -> list[tuple[Path, str]]:
    """Every notebook in ``folder`` at any depth, opening the zips in it; (path, ``prefix`` + its path there)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not is_junk(d))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            where = prefix + path.relative_to(folder).as_posix()
            if is_junk(name) or path.suffix.lower() not in (".ipynb", ".zip"):
                continue
            if path.is_symlink():
                outcome.problem(where, "a symbolic link: ignored")
            elif path.stat().st_size > budget.file_bytes:
                outcome.problem(where, f"larger than {budget.file_bytes} bytes: ignored")
            elif path.suffix.lower() == ".ipynb":
                found.append((path, where))
            else:
                found += open_zip(path, where, tmp, budget, outcome, depth)
    return found


def open_zip(archive: Path, shown: str, tmp: Path, budget: Budget, outcome: Outcome, depth: int
             ) -> list[tuple[Path, str]]:
    """The notebooks inside a zip (a student's own, or a whole export)."""
    if depth >= MAX_ZIP_DEPTH:
        outcome.problem(shown, "a zip inside a zip inside the export: not opened")
        return []
    folder = budget.folder(tmp)
    if not safe_extract(archive, folder, budget, outcome, shown):
        return []
    return notebooks_under(folder, shown + ":", tmp, budget, outcome, depth + 1)


def _student_entry(entry: Path, shown: str, tmp: Path, budget: Budget, outcome: Outcome, depth: int
                   ) -> list[Candidate]:
    """The notebooks of one entry of the class folder, with the student they belong to."""
    if entry.is_symlink():
        outcome.problem(shown, "a symbolic link: ignored")
        return []
    if (entry.is_dir() or entry.suffix.lower() in (".ipynb", ".zip")) and _looks_like_chapter(entry.name):
        outcome.problem(shown, "named like a chapter, not like a student: put it in a folder named after its "
                               "student (SOURCE holds one folder or file per student)")
        return []
    if entry.is_dir():
        student, notebooks = entry.name, notebooks_under(entry, shown + "/", tmp, budget, outcome, depth)
    elif entry.suffix.lower() in (".ipynb", ".zip"):
        student = student_of_file(entry.stem)
        notebooks = ([(entry, shown)] if entry.suffix.lower() == ".ipynb"
                     else open_zip(entry, shown, tmp, budget, outcome, depth))
    else:
        outcome.problem(shown, f"not a notebook or a zip ({entry.suffix or 'no extension'}): ignored")
        return []
    if not notebooks:
        outcome.problem(shown, "no notebook in it")
    return [Candidate(student, path, where) for path, where in notebooks]


def find_candidates(source: Path, tmp: Path, budget: Budget, outcome: Outcome) -> list[Candidate]:
    """Every notebook in SOURCE (a folder or a .zip) with the student it belongs to."""
    if source.is_file() and source.suffix.lower() == ".zip":
        extracted = budget.folder(tmp)
        if not safe_extract(source, extracted, budget, outcome, source.name):
            return []
        folder, depth = unwrap(extracted), 1
        inside = folder.relative_to(extracted).as_posix()
        prefix = f"{source.name}:" + ("" if inside == "." else inside + "/")
    elif source.is_dir():
        folder, prefix, depth = source, "", 0
    else:
        raise CommandError(f"{source}: expected a folder or a .zip file")
    candidates = []
    for entry in sorted(folder.iterdir()):
        if not is_junk(entry.name):
            candidates += _student_entry(entry, prefix + entry.name, tmp, budget, outcome, depth)
    return candidates


# ---------------------------------------------------------------------------------------------------------------
# which chapter


def grade_ids(nb) -> set[str]:
    """The nbgrader grade ids of a notebook's cells (a notebook as plain JSON, whatever its shape)."""
    return set(CourseNotebook.from_json(nb).grade_ids())


def chapter_signatures(root: Path) -> dict[str, set[str]]:
    """Each chapter's grade ids, from its instructor notebook in ``root/solutions``."""
    signatures = {}
    for chapter in registry.chapters_in(root / "solutions"):
        path = registry.notebook_path(root / "solutions", chapter)
        try:
            signatures[chapter] = grade_ids(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as err:
            raise CommandError(f"{path}: cannot read the instructor notebook ({err})") from None
    return {chapter: ids for chapter, ids in signatures.items() if ids}


def chapter_by_content(ids: set[str], signatures: dict[str, set[str]]) -> tuple[str | None, str]:
    """The chapter whose grade ids the notebook's are most like, or (None, why not)."""
    scores = sorted(((len(ids & sig) / len(ids | sig), chapter) for chapter, sig in signatures.items()),
                    reverse=True)
    if not scores or scores[0][0] < MIN_SIMILARITY:
        return None, "its nbgrader cells match no chapter of solutions/ (a notebook of another course?)"
    if len(scores) > 1 and scores[1][0] == scores[0][0]:
        return None, f"its cells match chapters {scores[0][1]} and {scores[1][1]} equally"
    return scores[0][1], ""


def chapter_by_name(shown: str, chapters: list[str]) -> str | None:
    """The one chapter id that the file's name (or a folder above it) contains, else None."""
    name = re.sub(r"[-\s]+", "_", shown.lower())
    named = [chapter for chapter in chapters if chapter.lower() in name]
    return named[0] if len(named) == 1 else None


def identify(candidate: Candidate, signatures: dict[str, set[str]], only: str | None) -> tuple[str | None, str]:
    """The chapter of a submitted notebook, or (None, why it cannot be told)."""
    chapters = sorted(signatures)
    try:
        ids = grade_ids(json.loads(candidate.path.read_bytes()))
        valid = True
    except (ValueError, UnicodeDecodeError):
        ids, valid = set(), False
    if ids:
        chapter, why = chapter_by_content(ids, signatures)
        if chapter and only and chapter != only:
            return None, f"its cells are chapter {chapter}'s, not {only}'s"
        return chapter, why
    named = chapter_by_name(candidate.shown, chapters)
    if only and named and named != only:
        return None, f"its name says chapter {named}, not {only}"
    if only or named:
        return only or named, ""
    if not valid:
        return None, "not a valid notebook (not JSON), and its name names no chapter"
    return None, "no nbgrader cells (was it started from the released notebook?) and its name names no chapter"


# ---------------------------------------------------------------------------------------------------------------
# students and placing


def safe_student_id(raw: str) -> str | None:
    """A usable student id made from a name (accents dropped, other characters to '_'), or None."""
    text = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9_.@+-]+", "_", text)
    text = re.sub(r"^[^A-Za-z0-9]+", "", text)[:100].rstrip("_")
    try:
        return check_student_id(text)
    except ValueError:
        return None


def assign_students(candidates: list[Candidate], outcome: Outcome) -> list[Candidate]:
    """Give each candidate its student id; drop (and report) those whose names cannot become one or collide."""
    by_id: dict[str, set[str]] = defaultdict(set)
    for candidate in candidates:
        candidate.student = safe_student_id(candidate.raw_student) or ""
        if candidate.student:
            by_id[candidate.student].add(candidate.raw_student)
    kept = []
    for candidate in candidates:
        raws = by_id.get(candidate.student, set())
        if not candidate.student:
            outcome.problem(candidate.shown, f"{candidate.raw_student!r} cannot be made into a student id")
        elif len(raws) > 1:
            names = " and ".join(repr(r) for r in sorted(raws))
            outcome.problem(candidate.shown, f"the names {names} both become student id {candidate.student!r}: "
                                             "rename one and collect again")
        else:
            if candidate.raw_student != candidate.student:
                outcome.renamed[candidate.raw_student] = candidate.student
            kept.append(candidate)
    return kept


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_per_chapter(candidates: list[Candidate], outcome: Outcome) -> dict[tuple[str, str], Candidate]:
    """One notebook per (student, chapter); a student with two different ones for a chapter gets neither."""
    groups: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        groups[(candidate.student, candidate.chapter)].append(candidate)
    chosen = {}
    for key, group in groups.items():
        if len({_digest(c.path) for c in group}) == 1:
            chosen[key] = group[0]
            continue
        shown = ", ".join(c.shown for c in group)
        for candidate in group:
            outcome.problem(candidate.shown, f"student {key[0]} has {len(group)} different notebooks for {key[1]} "
                                             f"({shown}): none placed; keep one and collect again")
    return chosen


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` so that nobody (grading, say) ever reads half a notebook."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def place(chosen: dict[tuple[str, str], Candidate], submitted: Path, force: bool, outcome: Outcome) -> None:
    """Copy each chosen notebook, byte for byte, to ``submitted/<student>/<chapter>/<chapter>.ipynb``."""
    by_student: dict[str, list[Candidate]] = defaultdict(list)
    for (student, _), candidate in sorted(chosen.items()):
        by_student[student].append(candidate)
    for student in tqdm(sorted(by_student), desc="collect", unit="student", file=sys.stderr, disable=None):
        for candidate in by_student[student]:
            chapter = candidate.chapter
            target = submitted / student / chapter / f"{chapter}.ipynb"
            if target.exists() and not force:
                outcome.skipped.append(f"{student}/{chapter} (from {candidate.shown})")
                continue
            write_bytes_atomic(target, candidate.path.read_bytes())
            outcome.placed.append(f"{student}/{chapter}")


def collect(source: Path, root: Path, chapter: str | None = None, force: bool = False) -> Outcome:
    """Import the submissions in ``source`` into ``root/autograder/submitted``; what happened to each."""
    signatures = chapter_signatures(root)
    if not signatures:
        raise CommandError(f"no chapters with nbgrader cells in {root / 'solutions'}: nothing to match against")
    if chapter is not None and chapter not in signatures:
        raise CommandError(f"chapter {chapter} has no instructor notebook in {root / 'solutions'}")
    outcome = Outcome()
    with tempfile.TemporaryDirectory(prefix="autograder-collect-") as tmp:
        candidates = find_candidates(source, Path(tmp), Budget(), outcome)
        for candidate in tqdm(candidates, desc="reading", unit="notebook", file=sys.stderr, disable=None):
            found, why = identify(candidate, signatures, chapter)
            if found:
                candidate.chapter = found
            else:
                outcome.problem(candidate.shown, why)
        identified = assign_students([c for c in candidates if c.chapter], outcome)
        place(one_per_chapter(identified, outcome), CourseLayout(root).submitted, force, outcome)
    return outcome


def print_outcome(outcome: Outcome, submitted: Path) -> None:
    for raw, student in sorted(outcome.renamed.items()):
        print(f"student {raw!r} is {student!r}")
    students = {p.split("/")[0] for p in outcome.placed}
    print(f"placed {len(outcome.placed)} notebook(s) of {len(students)} student(s) in {submitted}")
    if outcome.skipped:
        print(f"kept {len(outcome.skipped)} existing submission(s) (--force replaces them):",
              *outcome.skipped, sep="\n  ")
    if outcome.problems:
        print(f"could not place {len(outcome.problems)}:", *outcome.problems, sep="\n  ", file=sys.stderr)


def run(args) -> int:
    root = course_root(args.root)
    source = Path(args.source).expanduser()
    if not source.exists():
        raise CommandError(f"{source}: no such file or folder")
    chapter = None
    if args.chapter:
        try:
            chapter = registry.chapter_id(args.chapter, tree=root / "solutions")
        except KeyError as err:
            raise CommandError(err.args[0]) from None
    outcome = collect(source.resolve(), root, chapter, args.force)
    print_outcome(outcome, CourseLayout(root).submitted)
    return 0 if outcome.placed else 1


def add_command(commands) -> None:
    p = commands.add_parser(
        "collect",
        help="import a class's submissions from a folder or a .zip (an LMS export) into autograder/submitted/",
        description="Place every student's notebooks in ROOT/autograder/submitted/<student>/<chapter>/"
        "<chapter>.ipynb. SOURCE holds a folder per student (notebooks at any depth) or a file per student "
        "(<student>.ipynb, <student>.zip or <student>_<anything>.ipynb). The chapter comes from the notebook's "
        "nbgrader cells (its file name only when it has none). Zips are extracted safely (no paths outside, no "
        "links, size and entry caps).",
    )
    p.add_argument("source", metavar="SOURCE", help="a folder or a .zip file of submissions")
    p.add_argument("--chapter", metavar="C", help="the chapter every notebook should be (id or module name)")
    p.add_argument("--force", action="store_true", help="replace submissions that are already there")
    add_root_argument(p)
    p.set_defaults(run=run)

