"""``python -m autograder <command>``: the instructor's tools. ``python -m autograder <command> --help``."""

from __future__ import annotations

import argparse
import importlib
import sys

from autograder.course import CommandError


def _release(args) -> int:
    from autograder.release import release

    def progress(chapter):
        print(f"{'checking' if args.check else 'releasing'} {chapter} ...", flush=True)

    problems = release(args.chapters or None, check=args.check, progress=progress)
    if problems:
        print("chapters/ is out of sync with solutions/:", *problems, sep="\n  ", file=sys.stderr)
        print("Run: python -m autograder release", file=sys.stderr)
        return 1
    print("chapters/ matches solutions/" if args.check else "released to chapters/")
    return 0


COMMAND_MODULES = ("collect", "grading", "assemble", "feedback", "export", "report", "check", "book")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "release",
        help="make the student notebooks in chapters/ from the instructor notebooks in solutions/",
        description="Apply the book's cell tags to solutions/<id>/<id>.ipynb, run nbgrader generate_assignment "
        "--force for each chapter, and name the exercise in every stub.",
    )
    p.add_argument("chapters", nargs="*", metavar="CHAPTER",
                   help="chapter ids or module names (04a_attention or attention); default: all")
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 if chapters/ or the book tags are out of date")
    p.set_defaults(run=_release)

    # Each of these modules adds its own command with add_command(commands).
    for name in COMMAND_MODULES:
        importlib.import_module(f"autograder.{name}").add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CommandError as err:
        print(f"autograder {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
