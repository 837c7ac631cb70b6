"""The book's prose pages keep their promises: the introduction's outline is the table of contents, its figure
draws the pipeline it declares on the course checkpoint's real numbers, and each ability it promises names what the
linked chapters define; every link between pages lands on a page of the book (the instructor's guide on a page of
the instructor edition, and no other page on the guide); the glossary names every term in English and Chinese, the
errata cite tests that exist, and the background figure draws exactly the background table."""

from __future__ import annotations

import json
import re
import warnings
from functools import cache
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from llmcourse.registry import CHAPTER_IDS

BOOK = ROOT / "book"
PAGES = sorted(BOOK.glob("*.md"))
# The instructor's guide: pages of the instructor edition only (its table of contents adds them as a part of its
# own), so absent from the reader and student editions. hidden_tests is generated when that edition is built.
GUIDE = BOOK / "instructor"
GUIDE_PAGES = sorted(GUIDE.glob("*.md"))
GUIDE_FILES = ["release", "grading", "guarantees"]
GENERATED = {"book/instructor/hidden_tests"}
DOC_ROLE = re.compile(r"\{doc\}`(?:[^`<]*<([^>`]+)>|([^`]+))`")  # {doc}`target` or {doc}`text <target>`
MY_PAGES = ["background", "resources", "faq", "errata", "glossary", "zh_guide"]
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)\)")  # [text](target); text may hold [..]
CJK = re.compile(r"[\u4e00-\u9fff]")


def toc() -> dict:
    return yaml.safe_load((ROOT / "_toc.yml").read_text())


def toc_files() -> set[str]:
    t = toc()
    return {t["root"]} | {entry["file"] for part in t["parts"] for entry in part["chapters"]}


def part_of(caption_start: str) -> list[str]:
    """The files of the table of contents' part whose caption starts with ``caption_start`` ([] if none)."""
    for part in toc()["parts"]:
        if part["caption"].startswith(caption_start):
            return [entry["file"] for entry in part["chapters"]]
    return []


def links(text: str) -> list[str]:
    """The targets of the Markdown links in ``text`` that point inside the repository."""
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]


def book_path(page: Path, target: str) -> str:
    """A link target of ``page`` as the table of contents names files: relative to the root, no suffix."""
    path = (page.parent / target.split("#")[0]).resolve()
    return path.relative_to(ROOT).with_suffix("").as_posix()


def planned_chapter(path: str) -> bool:
    """A registered chapter that is not in the book yet: its notebook is still being written, or the table of
    contents does not list it yet (the chapter-8 labs, until their part of ``_toc.yml`` is added)."""
    parts = path.split("/")
    return (len(parts) == 3 and parts[0] == "solutions" and parts[1] == parts[2] and parts[1] in CHAPTER_IDS
            and (not (ROOT / f"{path}.ipynb").exists() or path not in toc_files()))


def outline() -> dict[int, str]:
    """The introduction's outline: section number -> the text of its list item."""
    text = (BOOK / "intro.md").read_text()
    text = text[text.index("## The outline"):]
    text = text[:text.index("\n\n", text.index("\n1. "))]
    items = re.split(r"\n(?=\d\. )", text[text.index("\n1. ") + 1:])
    return {int(item.split(".")[0]): item for item in items}


def test_my_pages_are_in_the_table_of_contents_where_they_belong():
    files = toc_files()
    for name in MY_PAGES:
        assert f"book/{name}" in files, f"book/{name}.md is not in _toc.yml"
    captions = [part["caption"] for part in toc()["parts"]]
    assert captions.index("1. Background") == captions.index("Start here") + 1
    assert part_of("1. Background") == ["book/background"]
    assert part_of("7. Tools and resources") == ["book/resources"]
    for name in ["faq", "glossary", "errata", "zh_guide"]:
        assert f"book/{name}" in part_of("Reference")


def test_the_outline_promises_nine_sections_each_with_its_pages():
    sections = outline()
    assert list(sections) == list(range(1, 10)), "the outline lists sections 1 to 9, in order"
    files = toc_files()
    for number, item in sections.items():
        targets = [book_path(BOOK / "intro.md", t) for t in links(item)]
        assert targets, f"section {number} of the outline links to no page"
        for target in targets:
            assert target in files or planned_chapter(target), f"section {number} links to {target}, not in _toc.yml"


def test_the_outline_matches_the_numbered_parts_of_the_table_of_contents():
    """A part "N. ..." of the table of contents holds exactly the pages that section N of the outline links to."""
    sections = outline()
    numbered = [part for part in toc()["parts"] if re.match(r"\d\. ", part["caption"])]
    assert numbered, "the table of contents has numbered parts"
    for part in numbered:
        number = int(part["caption"].split(".")[0])
        in_toc = [entry["file"] for entry in part["chapters"]]
        in_outline = [book_path(BOOK / "intro.md", t) for t in links(sections[number])]
        assert in_outline == in_toc, f"part {part['caption']!r}: outline {in_outline} vs _toc.yml {in_toc}"


def doc_targets(page: Path) -> list[str]:
    """The targets of the ``{doc}`` roles of ``page``, as link targets: with the suffix of the file they name (.md
    where there is none, as for a page that is generated when the book is built)."""
    targets = []
    for a, b in DOC_ROLE.findall(page.read_text()):
        target = a or b
        suffixes = [s for s in (".md", ".ipynb") if (page.parent / f"{target}{s}").is_file()]
        targets.append(target + (suffixes or [".md"])[0])
    return targets


def instructor_edition_files() -> set[str]:
    """The pages of the instructor edition: the reader edition's, the guide's and the generated ones."""
    return toc_files() | {f"book/instructor/{page.stem}" for page in GUIDE_PAGES} | GENERATED


def test_every_link_between_pages_lands_on_a_page_of_the_book():
    """A page of the reader edition links to pages of the reader edition; a page of the instructor's guide to pages
    of the instructor edition."""
    editions = [(page, toc_files()) for page in PAGES] + [(page, instructor_edition_files()) for page in GUIDE_PAGES]
    broken = []
    for page, files in editions:
        for target in links(page.read_text()) + doc_targets(page):
            path = (page.parent / target.split("#")[0]).resolve()
            name = book_path(page, target)
            if planned_chapter(name):
                continue  # checked by the next test
            if name in GENERATED and name in files:
                continue  # written when the instructor edition is built
            if not path.is_file():
                broken.append(f"{page.relative_to(BOOK)}: {target} (no such file)")
            elif path.suffix in (".md", ".ipynb") and name not in files:
                broken.append(f"{page.relative_to(BOOK)}: {target} (not in the edition's table of contents)")
    assert not broken, "\n".join(broken)


def test_links_to_registered_chapters_land_once_they_are_in_the_book():
    planned = sorted({book_path(page, t) for page in PAGES + GUIDE_PAGES for t in links(page.read_text())
                      if planned_chapter(book_path(page, t))})
    if planned:
        pytest.skip(f"linked and registered, but not written or not in _toc.yml yet: {', '.join(planned)}")


# The instructor's guide: book/instructors.md is in every edition, the guide's pages only in the instructor edition.

# The section headings of book/instructors.md when it held the whole guide: each is a heading of one of the pages
# the guide was split into.
OLD_INSTRUCTOR_HEADINGS = [
    "Edit a chapter, then release it",
    "Grading a class",
    "Points follow the work",
    "What the grader guarantees, and what it does not",
    "A class larger than one machine",
]


def test_the_guide_is_split_into_its_pages():
    assert sorted(page.stem for page in GUIDE_PAGES) == sorted(GUIDE_FILES)
    for page in GUIDE_PAGES + [BOOK / "instructors.md"]:
        assert re.match(r"# \S", page.read_text()), f"{page.relative_to(BOOK)} does not start with a # Title"
        assert f"book/instructor/{page.stem}" not in toc_files(), f"{page.name}: in the reader edition's _toc.yml"


def test_no_page_of_the_reader_edition_links_to_the_guide():
    """The guide's pages are absent from the reader and student editions: a link to one would break their build."""
    for page in PAGES:
        for target in links(page.read_text()) + doc_targets(page):
            assert not book_path(page, target).startswith("book/instructor/"), \
                f"{page.name} links to {target}, a page of the instructor edition only"
    named = re.findall(r"(?<!_build/)instructor/\S*", (BOOK / "instructors.md").read_text())  # links of any form
    assert not named, f"instructors.md names pages of the guide: {named}"


def test_every_section_of_the_old_instructors_page_survives_in_one_of_its_pages():
    headings = {line.lstrip("#").strip() for page in GUIDE_PAGES + [BOOK / "instructors.md"]
                for line in page.read_text().splitlines() if re.match(r"#{1,3} ", line)}
    missing = [heading for heading in OLD_INSTRUCTOR_HEADINGS if heading not in headings]
    assert not missing, f"sections of the old instructors.md that are no heading of the four pages: {missing}"


def test_the_instructors_page_names_the_three_editions_and_their_commands():
    text = (BOOK / "instructors.md").read_text()
    for edition, folder in [("reader", "_build/html"), ("student", "_build/student/html"),
                            ("instructor", "_build/instructor/html")]:
        assert f"python -m autograder book --edition {edition}" in text, f"no command for the {edition} edition"
        assert f"`{folder}`" in text, f"the {edition} edition's folder, {folder}, is not named"
    for command in ["release", "collect", "grade", "assemble", "feedback", "export", "report"]:
        assert f"python -m autograder {command}" in text, f"the term's outline lacks {command}"


@cache
def glossary_entries() -> list[tuple[str, str]]:
    text = (BOOK / "glossary.md").read_text()
    text = text[text.index("## Terms"):]
    return re.findall(r"^([^\s:#|].*)\n: (.*(?:\n  .*)*)", text, flags=re.M)


def test_every_glossary_term_is_in_english_and_chinese_and_links_to_its_chapter():
    entries = glossary_entries()
    assert len(entries) >= 60
    for term, definition in entries:
        english, _, chinese = term.partition(" · ")
        assert re.search(r"[A-Za-z]", english) and not CJK.search(english), f"{term!r}: no English name first"
        assert CJK.search(chinese), f"{term!r}: no Chinese name after ' · '"
        targets = links(definition)
        assert targets, f"{term!r}: no link to where the course defines it"
    names = " ".join(term for term, _ in entries)
    for chinese in ["注意力", "多头注意力", "前馈网络", "残差连接", "层归一化", "词元", "位置编码", "自回归", "困惑度",
                    "熵", "微调"]:
        assert chinese in names, f"the glossary lacks {chinese}"


def test_the_chinese_guide_maps_all_nine_sections():
    text = (BOOK / "zh_guide.md").read_text()
    sections = re.split(r"\n## ", text)[1:]
    assert [int(re.match(r"第 (\d) 节", s).group(1)) for s in sections] == list(range(1, 10))
    for section in sections:
        assert links(section), f"section {section[:8]!r} links to no chapter"
        assert "关键术语" in section or section.startswith(("第 7 节", "第 9 节")), section[:8]
    prose = re.sub(r"\[[^\]]*\]\([^)]*\)|`[^`]*`|\$[^$]*\$|\([^)]*\)|（[^）]*）", "", text)
    assert len(CJK.findall(prose)) > 0.5 * len(re.findall(r"\w", prose)), "the guide is written in Chinese"


@cache
def grade_ids() -> set[str]:
    ids = set()
    for notebook in ROOT.glob("solutions/*/*.ipynb"):
        for cell in json.loads(notebook.read_text())["cells"]:
            ids.add(cell.get("metadata", {}).get("nbgrader", {}).get("grade_id"))
    return ids - {None}


def test_the_errata_cite_tests_that_exist():
    """Each erratum quotes the source (in Chinese), gives the correct form, and names checks that exist: graded
    cells of the notebooks, test functions, and wrong answers (or check names) quoted from the files it names."""
    text = (BOOK / "errata.md").read_text()
    entries = re.split(r"\n## \d+\. ", text)[1:]
    assert len(entries) >= 7
    for entry in entries:
        title = entry.splitlines()[0]
        assert re.search(r"\*\*原文大意\*\*：.*" + CJK.pattern, entry), f"{title}: no claim of the source in Chinese"
        assert "**Correct.**" in entry, f"{title}: no correct form"
        if "**Shown by.**" not in entry:
            assert title == "The reading list", f"{title}: shown by nothing"
            continue
        shown = entry[entry.index("**Shown by.**"):]
        assert links(shown), f"{title}: links to no chapter"
        files = [ROOT / f for f in re.findall(r"`(tests/test_\w+\.py)", shown)]
        files += [(BOOK / t.split("#")[0]).resolve() for t in links(shown)]
        sources = "".join(f.read_text() for f in files if f.is_file())
        for name in re.findall(r"`(test_\w+)`", shown):
            assert name in grade_ids(), f"{title}: no graded cell {name}"
        for path, function in re.findall(r"`(tests/test_\w+\.py)::(test_\w+)`", shown):
            assert f"def {function}(" in (ROOT / path).read_text(), f"{title}: no test {path}::{function}"
        for quoted in re.findall(r'"([^"]{8,})"', shown):
            quoted = " ".join(quoted.split())  # the page wraps its lines
            assert quoted in sources, f"{title}: {quoted!r} is in none of the files it cites"


def test_every_faq_answer_links_to_what_shows_it():
    text = (BOOK / "faq.md").read_text()
    answers = re.split(r"\n### ", text)[1:]
    assert len(answers) >= 8
    for answer in answers:
        assert links(answer), f"{answer.splitlines()[0]!r}: no link"
    for lab in ["08a_scaling", "08b_compute", "08c_beyond_text", "08d_bias"]:
        assert f"../solutions/{lab}/{lab}.ipynb" in text, f"no FAQ answer links to lab {lab}"


# The background page: a MyST notebook whose code cell draws the table above it.

SCALE = {"M": 1e6, "B": 1e9, "T": 1e12}


def number(cell: str) -> float | None:
    """ "213M" -> 2.13e8, "1.4T" -> 1.4e12; "not stated" or "not published" -> None."""
    cell = cell.strip()
    if cell in ("not stated", "not published"):
        return None
    match = re.fullmatch(r"([\d.]+)([MBT])", cell)
    assert match, f"a number in the background table is written {cell!r}; expected e.g. 213M, 1.4T"
    return float(match[1]) * SCALE[match[2]]


@cache
def background() -> tuple[list[dict], str]:
    text = (BOOK / "background.md").read_text()
    table = text[text.index("| model | date |"):]
    table = table[:table.index("\n\n")].splitlines()
    header = [h.strip() for h in table[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in table[2:]]
    code = re.search(r"```\{code-cell\} python3\n(?::[^\n]*\n)*\n(.*?)```", text, flags=re.S)
    assert code, "the background page has a code cell"
    return rows, code.group(1)


def test_the_background_table_cites_a_paper_for_every_row():
    rows, _ = background()
    assert len(rows) >= 10
    text = (BOOK / "background.md").read_text()
    references = text[text.index("## References"):]
    for row in rows:
        assert re.fullmatch(r"20\d\d-\d\d", row["date"]), row
        authors = re.findall(r"([A-Z][A-Za-z]+)(?: et al\.| and [A-Z][a-z]+)? \((20\d\d)[ab]?\)", row["source"])
        assert authors or row["source"].startswith("OpenAI"), f"{row['model']}: no source"
        for name, year in authors:
            assert re.search(rf"^- {name}\b.*\({year}[ab]?\)", references, flags=re.M), \
                f"{row['model']}: {name} ({year}) is not in the references"


def test_the_background_figure_draws_exactly_the_table(capsys):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    rows, code = background()
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # plt.show() on Agg
        exec(compile(code, "background.md", "exec"), namespace)
    assert "times a year" in capsys.readouterr().out
    fig = namespace["fig"]
    for ax, column in zip(fig.axes, ["parameters", "training tokens"]):
        expected = sorted((int(r["date"][:4]) + (int(r["date"][5:]) - 1) / 12, number(r[column]))
                          for r in rows if number(r[column]) is not None)
        points = sorted(tuple(map(float, p)) for c in ax.collections for p in c.get_offsets())
        assert len(points) == len(expected), f"{column}: {len(points)} points for {len(expected)} numbers"
        for (date, value), (x, y) in zip(expected, points):
            assert abs(date - x) < 1e-9 and abs(value - y) <= 1e-9 * value, f"{column}: {(x, y)} vs {(date, value)}"
        labels = {t.get_text() for t in ax.texts}
        for r in rows:
            if number(r[column]) is not None:
                assert r["model"] in labels, f"{column}: {r['model']} is not labelled"
            elif r[column] == "not published" and column == "parameters":
                assert f" {r['model']}: not published" in labels, f"{r['model']}: not marked as unpublished"
    assert [m[0] for m in namespace["MODELS"]] == [r["model"] for r in rows], "the cell's rows are the table's"


# The introduction: what the course builds (a figure), and what a reader will be able to do (a list).

INTRO = BOOK / "intro.md"
CHECKPOINT = ROOT / "llmcourse" / "checkpoints" / "course-tiny"


def chapter_number(chapter: str) -> str:
    """ "04a_attention" -> "4a", the chapter's number in the book."""
    return chapter.split("_")[0].lstrip("0")


@cache
def defined_names(chapter: str) -> set[str]:
    """What the reader writes or reads in a chapter: the functions and classes that its solution cells and its
    exported (``#| export``) cells define."""
    names = set()
    for cell in json.loads((ROOT / "solutions" / chapter / f"{chapter}.ipynb").read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and (cell["metadata"].get("nbgrader", {}).get("solution")
                                            or source.startswith("#| export")):
            names |= set(re.findall(r"^(?:def|class) (\w+)", source, flags=re.M))
    return names


def abilities() -> list[str]:
    """The items of the introduction's list "You will be able to"."""
    text = INTRO.read_text()
    text = text[text.index("## You will be able to"):]
    text = text[text.index("\n1. ") + 1:text.index("\n## ")].strip()
    return re.split(r"\n(?=\d+\. )", text)


def test_each_ability_names_what_the_chapters_it_links_to_define():
    items = abilities()
    assert 6 <= len(items) <= 10, f"{len(items)} abilities; the page promises 6 to 10"
    for item in items:
        first = " ".join(item.split()[1:6])
        assert re.search(r"\]\([^)\s]+\.ipynb\)\)\.$", item), f"{first}...: does not end with a link to its chapter"
        chapters = {book_path(INTRO, t).split("/")[1] for t in links(item)}
        assert chapters and all(f"solutions/{c}/{c}" in toc_files() for c in chapters), f"{first}...: {chapters}"
        names = re.findall(r"`([^`]+)`", item)
        assert names, f"{first}...: names nothing the reader writes"
        defined = set().union(*(defined_names(c) for c in chapters))
        for name in names:
            assert name in defined, f"{first}...: `{name}` is defined in none of {sorted(chapters)}"


@cache
def intro_cell() -> str:
    text = INTRO.read_text()
    assert text.startswith("---\njupytext:"), "intro.md is a MyST notebook (jupytext front matter)"
    code = re.search(r"```\{code-cell\} python3\n((?::[^\n]*\n)*)\n(.*?)```", text, flags=re.S)
    assert code, "the introduction has a code cell"
    assert ":tags: [remove-input]" in code.group(1), "only the figure shows, not its code"
    return code.group(2)


def run_intro_cell(capsys) -> dict:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    namespace: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(intro_cell(), "intro.md", "exec"), namespace)
    others = [w for w in caught if "non-interactive" not in str(w.message)]  # plt.show() on Agg, not in the book
    assert not others, f"the figure's cell warns: {[str(w.message) for w in others]}"
    assert capsys.readouterr().err == "", "the figure's cell writes to stderr"
    return namespace


def test_the_intro_figure_draws_one_labelled_box_per_stage_with_its_chapter(capsys):
    from matplotlib.patches import FancyBboxPatch

    namespace = run_intro_cell(capsys)
    pipeline, fig = namespace["PIPELINE"], namespace["fig"]
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    stages = [stage for stage, _, _ in pipeline]
    assert len(set(stages)) == len(stages) >= 8
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]

    def inside(text, box) -> bool:
        x, y = text.get_position()
        return box.get_x() <= x <= box.get_x() + box.get_width() and box.get_y() <= y <= box.get_y() + box.get_height()

    drawn = []
    for stage, example, chapters in pipeline:
        for chapter in chapters:
            assert f"solutions/{chapter}/{chapter}" in toc_files(), f"{stage}: chapter {chapter} is not in _toc.yml"
        names = [t for t in ax.texts if t.get_text() == stage]
        assert len(names) == 1, f"{stage}: labelled {len(names)} times"
        around = [b for b in boxes if inside(names[0], b)]
        assert around, f"{stage}: its name is in no box"
        box = min(around, key=lambda b: b.get_width() * b.get_height())
        contents = {t.get_text() for t in ax.texts if inside(t, box)}
        label = "ch. " + ", ".join(chapter_number(c) for c in chapters)
        assert label in contents, f"{stage}: its box does not say {label!r}"
        assert example in contents, f"{stage}: its box does not show its example"
        drawn.append(box)
    assert len({id(box) for box in drawn}) == len(pipeline), "two stages share a box"
    numbers = {chapter_number(c) for _, _, chapters in pipeline for c in chapters}
    assert {"2", "3", "4a", "4b", "4c", "4d", "5a", "5b", "5c"} <= numbers, "a chapter of the model is missing"


def test_the_intro_figure_example_is_the_checkpoints(capsys):
    """The figure's tokens, ids and next-token probabilities are those of the course's checkpoint, computed here by
    Hugging Face's GPT-2 on its weights (chapter 5a shows that our GPT gives the same), and its sizes are the
    checkpoint's."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from llmcourse.fallbacks.tokens_and_positions import BPETokenizer

    namespace = run_intro_cell(capsys)
    tokenizer = BPETokenizer.load(CHECKPOINT)
    ids = tokenizer.encode(namespace["PROMPT"])
    assert [(tokenizer.decode([i]), i) for i in ids] == namespace["TOKENS"]
    config = json.loads((CHECKPOINT / "config.json").read_text())
    assert (namespace["WIDTH"], namespace["LAYERS"], namespace["VOCAB"]) == \
        (config["n_embd"], config["n_layer"], config["vocab_size"])
    assert config["n_inner"] is None, "the figure's feed-forward width is 4 x n_embd, GPT-2's default"
    model = transformers.GPT2LMHeadModel.from_pretrained(CHECKPOINT).eval()
    with torch.no_grad():
        probs = model(torch.tensor([ids])).logits[0, -1].softmax(-1)
    shown = namespace["NEXT"]
    top = probs.topk(len(shown))
    for (token, p), i, q in zip(shown, top.indices.tolist(), top.values.tolist()):
        assert (token, p) == (tokenizer.decode([i]), round(q, 2)), f"{(token, p)} vs {tokenizer.decode([i]), q}"
