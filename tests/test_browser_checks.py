"""The browser checks of tests/browser.py catch what they are meant to catch: each is run on tiny hand-written pages,
a sound one (no problem) and broken ones (the problem named)."""

from __future__ import annotations

import struct
import sysconfig
import threading
import zlib
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from browser import CHROMIUM, Chromium, check_links, check_page, check_search, pages, screenshot

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")

MATHJAX = Path(sysconfig.get_paths()["purelib"]) / "sphinx-mathjax-offline" / "static" / "mathjax" / "tex-chtml.js"


def png(width: int = 4, height: int = 3) -> bytes:
    """A valid RGB PNG, all grey."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + b"\x80" * 3 * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def page(body: str, head: str = "") -> str:
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'>{head}</head><body>{body}</body></html>"


@pytest.fixture(scope="module")
def browser():
    with Chromium() as b:
        yield b


@pytest.fixture
def site(tmp_path):
    """Write pages into a scratch site: ``site({"a.html": "<p>..</p>"})`` -> its root."""
    def write(files: dict[str, str | bytes]) -> Path:
        for name, content in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        return tmp_path
    return write


def check(browser, site, body: str, head: str = "", **files) -> list[str]:
    root = site({"p.html": page(body, head), **files})
    return check_page(browser, root, "p.html")


def test_a_sound_page_has_no_problem(browser, site):
    stats = {}
    root = site({"p.html": page("<h1>Fine</h1><img src='a.png'><p>a price of $5 and $6</p><pre>$$ x $$ \\(</pre>"
                                "<code>\\[</code>"),
                 "a.png": png()})
    assert check_page(browser, root, "p.html", stats) == []
    assert stats == {"pages": 1, "images": 1, "formulas": 0, "toggles": 0, "details": 0}


# --- console errors and failed requests ----------------------------------------------------------------------------

@pytest.mark.parametrize(("script", "expected"), [
    ("console.error('boom')", "console.error: boom"),
    ("console.assert(false, 'nope')", "console.assert: nope"),
    ("null.x", "uncaught exception: TypeError"),
    ("Promise.reject(new Error('later'))", "unhandled promise rejection: Error: later"),
    ("setTimeout(() => { throw new Error('late') }, 100)", "uncaught exception: Error: late"),
    ("const a = 1; const a = 2;", "uncaught exception: SyntaxError"),
])
def test_console_errors_and_exceptions_are_caught(browser, site, script, expected):
    problems = check(browser, site, f"<script>{script}</script>")
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_console_log_or_warning_is_not_an_error(browser, site):
    assert check(browser, site, "<script>console.log('hi'); console.warn('careful'); console.info('x')</script>") == []


@pytest.mark.parametrize("tag", ["<script src='missing.js'></script>", "<link rel='stylesheet' href='missing.css'>",
                                 "<script>fetch('missing.json').catch(() => null)</script>"])
def test_a_failed_request_is_caught(browser, site, tag):
    problems = check(browser, site, tag)
    assert any(p.startswith("failed request:") and "missing." in p for p in problems), problems


def test_an_http_error_status_is_caught(browser, tmp_path):
    (tmp_path / "p.html").write_text(page("<script src='missing.js'></script>"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    server.RequestHandlerClass.log_message = lambda *args: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert browser.open(f"http://127.0.0.1:{server.server_port}/p.html") == []
        assert any(p.startswith("HTTP 404:") and "missing.js" in p for p in browser.page_errors())
    finally:
        server.shutdown()
        server.server_close()


def test_every_page_is_a_first_visit(browser, site):
    """A page that breaks only for a first-time visitor (empty storage) is caught whatever page was checked before."""
    root = site({"a.html": page("<script>localStorage.setItem('mode', 'dark')</script>"),
                 "b.html": page("<script>if (!localStorage.getItem('mode')) console.error('no mode')</script>")})
    assert check_page(browser, root, "a.html") == []
    problems = check_page(browser, root, "b.html")
    assert len(problems) == 1 and problems[0].startswith("console.error: no mode"), problems


def test_a_redirect_is_followed(browser, site):
    root = site({"index.html": '<meta http-equiv="Refresh" content="0; url=b.html" />',
                 "b.html": page("<script>console.error('on the target')</script>")})
    problems = check_page(browser, root, "index.html")
    assert len(problems) == 1 and "on the target" in problems[0], problems


# --- images --------------------------------------------------------------------------------------------------------

def test_images(browser, site):
    ok = check(browser, site, "<div style='height: 5000px'></div><img loading='lazy' src='a.png'>", **{"a.png": png()})
    assert ok == []
    problems = check(browser, site, "<img src='gone.png'><img src='text.png'>", **{"text.png": "not an image"})
    assert "image did not load: gone.png" in problems
    assert "image did not load: text.png" in problems


# --- formulas ------------------------------------------------------------------------------------------------------

def fake_mathjax(delay_ms: int) -> str:
    """A stand-in for MathJax: typesets every .math element after ``delay_ms``; MathJax.startup.promise waits for it."""
    return f"""<script>window.MathJax = {{startup: {{promise: new Promise(done => setTimeout(() => {{
        document.querySelectorAll('.math').forEach(m => {{ m.textContent = '';
            m.appendChild(document.createElement('mjx-container')); }});
        done(); }}, {delay_ms}))}}}};</script>"""


def test_the_check_waits_for_mathjax(browser, site):
    body = "<p><span class='math'>\\(x\\)</span> and</p><div class='math'>\\[y\\]</div>"
    stats = {}
    root = site({"p.html": page(body, fake_mathjax(500))})
    assert check_page(browser, root, "p.html", stats) == []
    assert stats["formulas"] == 2


def test_formulas_left_raw_are_caught(browser, site):
    problems = check(browser, site, "<p><span class='math'>\\(x\\)</span> and $$y$$</p>")  # no MathJax at all
    assert "0 typeset formulas (mjx-container) for 1 .math sources" in problems
    assert any(p.startswith('formula not typeset: <span.math> "\\(x\\)"') for p in problems), problems
    assert sum(p.startswith("raw TeX delimiter in the text:") for p in problems) == 2, problems


@pytest.mark.skipif(not MATHJAX.is_file(), reason="needs sphinx-mathjax-offline's MathJax")
def test_real_mathjax(browser, site):
    head = (f"<script>window.MathJax = {{options: {{processHtmlClass: 'math'}}}}</script>"
            f"<script defer src='{MATHJAX.as_uri()}'></script>")
    stats = {}
    root = site({"p.html": page("<p class='tex2jax_ignore'>Inline <span class='math'>\\(a^2\\)</span></p>"
                                "<div class='math'>\\[\\sum_i x_i\\]</div>", head)})
    assert check_page(browser, root, "p.html", stats) == []
    assert stats["formulas"] == 2
    broken = check(browser, site, "<p class='tex2jax_ignore'><span class='math'>\\(\\frac{a}\\)</span></p>", head)
    assert any(p.startswith("formula with a TeX error:") for p in broken), broken


# --- "show code" toggles -------------------------------------------------------------------------------------------

TOGGLE = ("<details class='hide above-input'{attrs}><summary>Show code cell source</summary>"
          "<div class='cell_input'><pre{pre}>def f(): pass</pre></div></details>")


def test_a_toggle_opens_and_shows_its_code(browser, site):
    stats = {}
    root = site({"p.html": page(TOGGLE.format(attrs="", pre="") * 2)})
    assert check_page(browser, root, "p.html", stats) == []
    assert stats["toggles"] == 2


def test_a_toggle_that_does_not_open_is_caught(browser, site):
    body = TOGGLE.format(attrs=" id='t'", pre="") + \
        "<script>t.querySelector('summary').addEventListener('click', e => e.preventDefault())</script>"
    assert check(browser, site, body) == ["toggle 1: clicking its summary did not open it"]


def test_a_toggle_whose_code_stays_hidden_is_caught(browser, site):
    problems = check(browser, site, TOGGLE.format(attrs="", pre=" style='display: none'"))
    assert problems == ['toggle 1: opened, but its content is not visible: <pre> "def f(): pass"'], problems


def test_a_covered_toggle_is_caught(browser, site):
    body = TOGGLE.format(attrs="", pre="") + \
        "<div class='veil' style='position: fixed; inset: 0; background: white'>over everything</div>"
    problems = check(browser, site, body)
    assert problems[0] == 'toggle 1: its summary is covered by <div.veil> "over everything"', problems


# --- horizontal overflow -------------------------------------------------------------------------------------------

def test_wide_content_inside_a_scrolling_box_is_fine(browser, site):
    body = ("<div class='highlight' style='overflow-x: auto'><pre>" + "x" * 500 + "</pre></div>"
            "<div style='overflow-x: auto'><table><tr><td style='min-width: 3000px'>wide</td></tr></table></div>")
    assert check(browser, site, body) == []


def test_overflow_is_caught(browser, site):
    problems = check(browser, site, "<table class='wide'><tr><td style='min-width: 2000px'>a table</td></tr></table>")
    assert problems[0].startswith("horizontal overflow: the page is ")
    assert problems[0].endswith("wider than the window (1280 px)")
    assert problems[1].startswith('horizontal overflow: <table.wide> "a table" reaches ')
    assert len(problems) == 2, "only the outermost overflowing element is reported"


def test_overflow_hidden_by_the_page_is_still_caught(browser, site):
    """The page does not scroll sideways (html clips), but content is cut off at the edge: it is reported."""
    problems = check(browser, site, "<div style='overflow-x: clip'><p style='width: 1500px'>cut</p></div>"
                                    "<p id='past' style='margin-left: 1300px; width: 10px'>off</p>",
                     head="<style>html { overflow-x: hidden }</style>")
    assert problems[1:] == ['horizontal overflow: <p#past> "off" reaches 1318 px, past the 1280 px window'], problems


# --- links ---------------------------------------------------------------------------------------------------------

def test_links(site):
    root = site({
        "index.html": '<meta http-equiv="Refresh" content="0; url=book/a.html" />',
        "book/a.html": page("<h1 id='top'>A</h1><a name='old'></a>"
                            "<a href='#top'>ok</a><a href='#old'>ok</a><a href='#'>ok</a><a href='b.html#sec'>ok</a>"
                            "<a href='../index.html?x=1'>ok</a><a href='https://example.org/x#y'>out</a>"
                            "<a href='mailto:a@b.c'>mail</a><img src='data:image/png;base64,AAAA'>"
                            "<a href='b.html#nope'>dead anchor</a><a href='gone.html'>dead</a>"
                            "<a href='#missing'>dead here</a><img src='../_images/x.png'>"),
        "book/b.html": page("<section id='sec'>B</section>"),
        "_static/lib.html": page("<a href='nothing.html'>not a page of the site: not checked</a>"),
    })
    stats = {}
    assert sorted(check_links(root, stats)) == [
        "dead link: book/a.html: <a> #missing (no id 'missing' in book/a.html)",
        "dead link: book/a.html: <a> b.html#nope (no id 'nope' in book/b.html)",
        "dead link: book/a.html: <a> gone.html (no such file)",
        "dead link: book/a.html: <img> ../_images/x.png (no such file)",
    ]
    assert stats == {"link_pages": 3, "links": 10, "fragments": 5}
    site({"index.html": '<meta http-equiv="Refresh" content="0; url=book/c.html" />'})
    assert "dead link: index.html: <meta refresh> book/c.html (no such file)" in check_links(root)


# --- search, pages, screenshots, the browser's life --------------------------------------------------------------

SEARCH = """<div id='search-results'></div><script>
  setTimeout(() => {{ document.querySelector('#search-results').innerHTML =
    "<p class='search-summary'>Search finished, found {n} page(s)</p><ul class='search'>{items}</ul>" }}, 300);
</script>"""


def test_search(browser, site):
    root = site({"search.html": page(SEARCH.format(n=2, items="<li>a</li><li>b</li>"))})
    assert check_search(browser, root, "attention") == []
    site({"search.html": page(SEARCH.format(n=0, items=""))})
    problems = check_search(browser, root, "attention", timeout=1)
    assert len(problems) == 1 and problems[0].startswith("search for 'attention' listed no result within 1 s")


def test_pages(site):
    root = site({name: page("") for name in ("index.html", "genindex.html", "search.html", "book/a.html",
                                             "_static/x.html", "solutions/c/c.html")})
    assert pages(root) == ["book/a.html", "index.html", "solutions/c/c.html"]


def test_screenshot(browser, site, tmp_path):
    root = site({"p.html": page("<h1>Hello</h1>")})
    data = screenshot(browser, root, "p.html", tmp_path / "shots" / "p.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 900)
    site({"tall.html": page("<div style='height: 3000px'>tall</div>")})
    data = screenshot(browser, root, "tall.html", tmp_path / "shots" / "tall.png", full_page=True).read_bytes()
    assert struct.unpack(">II", data[16:24])[1] > 3000


def test_the_browser_is_killed():
    with Chromium() as b:
        group = b.proc.pid
        assert group in alive_in_group(group)
        assert b.evaluate("1 + 1") == 2
        assert b.evaluate("[innerWidth, innerHeight]") == [1280, 900]
    assert not alive_in_group(group), "a process of the browser is left running"


def alive_in_group(group: int) -> list[int]:
    """The processes of process group ``group`` that are not dead (zombies wait for PID 1 to reap them)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive
