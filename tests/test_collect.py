"""python -m autograder collect: a class's submissions, from a folder or an LMS .zip, land where grading looks.

The chapter comes from the notebook's nbgrader cells (file names lie), the student from the folder or file name,
and a zip can neither write outside its temporary folder nor blow up the disk."""

from __future__ import annotations

import argparse
import json
import shutil
import stat
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

from autograder import collect
from autograder.course import CommandError

A, B = "04a_attention", "04b_multi_head_attention"
RELEASE_A = (ROOT / "chapters" / A / f"{A}.ipynb").read_bytes()
RELEASE_B = (ROOT / "chapters" / B / f"{B}.ipynb").read_bytes()
PLAIN = json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "source": "1 + 1", "outputs": [],
                               "execution_count": None}], "metadata": {}, "nbformat": 4,
                    "nbformat_minor": 5}).encode()
NOT_JSON = b"{this is not json"


@pytest.fixture
def course(tmp_path):
    root = tmp_path / "course"
    for chapter in (A, B):
        shutil.copytree(ROOT / "solutions" / chapter, root / "solutions" / chapter)
    return root


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def submitted(root, student, chapter):
    return root / "autograder" / "submitted" / student / chapter / f"{chapter}.ipynb"


def run_collect(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    collect.add_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["collect", *argv])
    return args.run(args)


def placed(root) -> set[str]:
    base = root / "autograder" / "submitted"
    return {p.relative_to(base).parent.as_posix() for p in base.rglob("*.ipynb")} if base.is_dir() else set()


# ---------------------------------------------------------------------------------------------------------------
# a folder


def test_collect_folder(course, tmp_path, capsys):
    src = tmp_path / "export"
    write(src / "alice" / "work" / "deep" / "homework.ipynb", RELEASE_A)  # any depth, any name
    write(src / "alice" / ".ipynb_checkpoints" / "homework-checkpoint.ipynb", RELEASE_B)  # ignored
    write(src / "alice" / "mha.ipynb", RELEASE_B)
    write(src / "bob.ipynb", RELEASE_B)  # <student>.ipynb
    write(src / "carol_late_04a_attention.ipynb", RELEASE_B)  # the name says 4a, the content 4b: content wins
    write(src / "erin_04a_attention.ipynb", PLAIN)  # no nbgrader cells: placed by its name
    write(src / "frank_04a_attention.ipynb", NOT_JSON)  # not JSON, named: placed, grading says invalid
    write(src / "gina_broken.ipynb", NOT_JSON)  # not JSON, not named: reported
    write(src / "dave_notes.ipynb", PLAIN)  # no nbgrader cells, not named: reported
    write(src / "Jöhn Doe" / "x.ipynb", RELEASE_A)  # becomes John_Doe
    write(src / "Jane Doe" / "x.ipynb", RELEASE_A)  # Jane Doe and Jane_Doe collide: neither placed
    write(src / "Jane_Doe" / "x.ipynb", RELEASE_A)
    write(src / "hank" / "a1.ipynb", RELEASE_A)  # two different notebooks for 4a: neither placed
    write(src / "hank" / "a2.ipynb", RELEASE_A.replace(b"YOUR CODE HERE", b"MY CODE HERE"))
    write(src / "ivy" / "a.ipynb", RELEASE_A)  # the same notebook twice is fine
    write(src / "ivy" / "copy" / "a.ipynb", RELEASE_A)
    write(src / "report.pdf", b"%PDF")
    write(src / A / f"{A}.ipynb", RELEASE_A)  # a chapter folder is not a student

    assert run_collect([str(src), "--root", str(course)]) == 0
    assert placed(course) == {f"alice/{A}", f"alice/{B}", f"bob/{B}", f"carol/{B}", f"erin/{A}", f"frank/{A}",
                              f"John_Doe/{A}", f"ivy/{A}"}
    assert submitted(course, "alice", A).read_bytes() == RELEASE_A  # byte for byte
    assert submitted(course, "frank", A).read_bytes() == NOT_JSON
    out, err = capsys.readouterr()
    assert "placed 8 notebook(s) of 7 student(s)" in out
    assert "'Jöhn Doe' is 'John_Doe'" in out
    assert "gina_broken.ipynb: not a valid notebook (not JSON), and its name names no chapter" in err
    assert "dave_notes.ipynb: no nbgrader cells" in err
    assert "'Jane Doe' and 'Jane_Doe' both become student id 'Jane_Doe'" in err
    assert "student hank has 2 different notebooks for 04a_attention" in err
    assert "report.pdf: not a notebook or a zip" in err
    assert f"{A}: named like a chapter, not like a student" in err


def test_existing_submissions_are_kept_unless_force(course, tmp_path, capsys):
    src = tmp_path / "export"
    write(src / "alice.ipynb", RELEASE_A)
    write(submitted(course, "alice", A), b"earlier")
    assert run_collect([str(src), "--root", str(course)]) == 1  # nothing placed
    assert submitted(course, "alice", A).read_bytes() == b"earlier"
    assert "kept 1 existing submission(s)" in capsys.readouterr().out
    assert run_collect([str(src), "--root", str(course), "--force"]) == 0
    assert submitted(course, "alice", A).read_bytes() == RELEASE_A


def test_chapter_option(course, tmp_path, capsys):
    src = tmp_path / "export"
    write(src / "alice.ipynb", PLAIN)  # no metadata, no chapter name: taken to be the chapter asked for
    write(src / "bob.ipynb", RELEASE_B)  # the content says 4b: not placed as 4a
    write(src / "carol.ipynb", NOT_JSON)
    assert run_collect([str(src), "--chapter", "attention", "--root", str(course)]) == 0
    assert placed(course) == {f"alice/{A}", f"carol/{A}"}
    assert "its cells are chapter 04b_multi_head_attention's, not 04a_attention's" in capsys.readouterr().err
    with pytest.raises(CommandError, match="no chapter is called 'nonsense'"):
        run_collect([str(src), "--chapter", "nonsense", "--root", str(course)])


def test_source_must_exist(course, tmp_path):
    with pytest.raises(CommandError, match="no such file or folder"):
        run_collect([str(tmp_path / "nowhere"), "--root", str(course)])
    write(tmp_path / "file.txt", b"x")
    with pytest.raises(CommandError, match="expected a folder or a .zip"):
        run_collect([str(tmp_path / "file.txt"), "--root", str(course)])


# ---------------------------------------------------------------------------------------------------------------
# a zip


def symlink_entry(zf: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, target)


def make_zip(path, entries: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_collect_zip_with_malicious_entries(course, tmp_path, capsys):
    inner = make_zip(tmp_path / "inner.zip", {"sub/attention.ipynb": RELEASE_A})
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("alice/04a.ipynb", RELEASE_A)
        zf.writestr("bob_submission.ipynb", RELEASE_B)
        zf.writestr("carol.zip", inner.read_bytes())  # <student>.zip
        zf.writestr("../evil_parent.ipynb", RELEASE_A)
        zf.writestr("/tmp/evil_absolute_7f3a.ipynb", RELEASE_A)
        zf.writestr("dave/../../evil_climb.ipynb", RELEASE_A)
        zf.writestr("C:/evil_drive.ipynb", RELEASE_A)
        symlink_entry(zf, "erin/link.ipynb", "/etc/passwd")
        zf.writestr("__MACOSX/alice/._04a.ipynb", b"junk")
    assert run_collect([str(archive), "--root", str(course)]) == 0
    assert placed(course) == {f"alice/{A}", f"bob/{B}", f"carol/{A}"}
    for name in ("evil_parent.ipynb", "evil_climb.ipynb", "evil_drive.ipynb"):
        assert not any(tmp_path.parent.rglob(name)), name
    assert not (tmp_path.parent / "evil_parent.ipynb").exists() and not Path("/tmp/evil_absolute_7f3a.ipynb").exists()
    err = capsys.readouterr().err
    for name in ("../evil_parent.ipynb", "/tmp/evil_absolute_7f3a.ipynb", "dave/../../evil_climb.ipynb",
                 "C:/evil_drive.ipynb"):
        assert f"export.zip:{name}: an absolute path or one with '..': refused" in err
    assert "export.zip:erin/link.ipynb: a symbolic link: refused" in err


def test_zip_odd_entries(course, tmp_path, capsys):
    deepest = make_zip(tmp_path / "deepest.zip", {"x.ipynb": RELEASE_A})
    deeper = make_zip(tmp_path / "deeper.zip", {"deepest.zip": deepest.read_bytes()})
    archive = make_zip(tmp_path / "odd.zip", {
        "amy.ipynb": RELEASE_A,
        "amy.ipynb/inside.ipynb": RELEASE_B,  # a file and a folder of the same name
        "ben/deeper.zip": deeper.read_bytes(),  # a zip in a zip in the export
        "cat/notes.txt": b"not a notebook",
    })
    assert run_collect([str(archive), "--root", str(course)]) == 0
    assert placed(course) == {f"amy/{A}"}
    err = capsys.readouterr().err
    assert "odd.zip:amy.ipynb/inside.ipynb: cannot be extracted" in err
    assert "odd.zip:ben/deeper.zip:deepest.zip: a zip inside a zip inside the export: not opened" in err
    assert "odd.zip:cat: no notebook in it" in err


def test_zip_wrapped_in_one_folder(course, tmp_path, capsys):
    archive = make_zip(tmp_path / "class.zip", {"class/alice/a.ipynb": RELEASE_A, "class/bob.ipynb": RELEASE_B})
    assert run_collect([str(archive), "--root", str(course)]) == 0
    assert placed(course) == {f"alice/{A}", f"bob/{B}"}
    # one student's folder of chapter notebooks is that student, not a wrapper
    archive = make_zip(tmp_path / "one.zip", {f"zoe/{A}.ipynb": RELEASE_A, f"zoe/{B}.ipynb": RELEASE_B})
    assert run_collect([str(archive), "--root", str(course)]) == 0
    assert {f"zoe/{A}", f"zoe/{B}"} <= placed(course)


def test_zip_bombs_are_refused(course, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(collect, "MAX_FILE_BYTES", 200_000)
    big = RELEASE_A.replace(b'"cells": [', b'"padding": "' + b" " * 1_000_000 + b'", "cells": [', 1)
    archive = make_zip(tmp_path / "bomb.zip", {"alice.ipynb": big, "bob.ipynb": RELEASE_A})
    assert archive.stat().st_size < 200_000  # small on disk, large when extracted
    assert run_collect([str(archive), "--root", str(course)]) == 0
    assert placed(course) == {f"bob/{A}"}
    assert "bomb.zip:alice.ipynb: larger than 200000 bytes once extracted" in capsys.readouterr().err

    monkeypatch.setattr(collect, "MAX_ENTRIES", 5)
    many = make_zip(tmp_path / "many.zip", {f"s{i}.ipynb": RELEASE_A for i in range(10)})
    assert run_collect([str(many), "--root", str(course)]) == 1
    assert "10 entries, more than the 5 still allowed" in capsys.readouterr().err


def test_total_size_cap_counts_bytes_written(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {f"s{i}.ipynb": b"x" * 1000 for i in range(5)})
    budget, outcome = collect.Budget(total_bytes=2500), collect.Outcome()
    (tmp_path / "out").mkdir()
    assert collect.safe_extract(archive, tmp_path / "out", budget, outcome, "a.zip")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s0.ipynb", "s1.ipynb"]
    assert any("total size cap" in p for p in outcome.problems)


def test_bad_zip_is_reported(course, tmp_path, capsys):
    write(tmp_path / "broken.zip", b"PK not really")
    assert run_collect([str(tmp_path / "broken.zip"), "--root", str(course)]) == 1
    assert "broken.zip: not a readable zip file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# the pieces


@pytest.mark.parametrize("name, safe", [("a/b.ipynb", "a/b.ipynb"), ("./a//b.ipynb", "a/b.ipynb"),
                                        ("a\\b.ipynb", "a/b.ipynb"), ("../a.ipynb", None), ("/a.ipynb", None),
                                        ("a/../../b", None), ("C:\\a.ipynb", None), ("", None)])
def test_safe_member_path(name, safe):
    result = collect.safe_member_path(name)
    assert (None if result is None else str(result)) == safe


@pytest.mark.parametrize("raw, student", [("alice", "alice"), ("Jöhn Doe", "John_Doe"), ("a.b@uni.edu", "a.b@uni.edu"),
                                          ("..hidden", "hidden"), ("日本", None), ("x" * 150, "x" * 100)])
def test_safe_student_id(raw, student):
    assert collect.safe_student_id(raw) == student


def test_student_of_file():
    assert collect.student_of_file("alice") == "alice"
    assert collect.student_of_file("alice_12345_04a_attention") == "alice"


def test_chapter_by_content(course):
    signatures = collect.chapter_signatures(course)
    assert set(signatures) == {A, B}
    assert collect.chapter_by_content(collect.grade_ids(json.loads(RELEASE_A)), signatures) == (A, "")
    assert collect.chapter_by_content({"imports", "setup"}, signatures)[0] is None  # shared ids prove nothing
