"""A small Chrome DevTools Protocol client for headless Chromium, and the checks the browser suite runs on each page of
a built book (tests/test_browser.py): no console error or failed request, every image loaded, every formula
typeset, every "show code" toggle opens, nothing overflows the page sideways, every internal link and anchor lands,
and the offline search finds something.

One browser and one tab serve all pages: ``with Chromium() as browser: check_page(browser, html_root, page)``."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import websocket

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH, HEIGHT = 1280, 900
SKIPPED_PAGES = {"genindex.html", "search.html"}  # Sphinx's generated index; search has check_search


class CDPError(RuntimeError):
    """The browser answered a command with an error, or did not answer in time."""


class Chromium:
    """One headless Chromium and a connection to its one tab. A context manager that always kills the browser.

    Every event the tab sends is seen by ``_dispatch``, which keeps, for the page last opened by ``open``, its
    console errors, uncaught exceptions, error log entries and failed requests (``page_errors``)."""

    def __init__(self, executable: str | None = None, width: int = WIDTH, height: int = HEIGHT,
                 timeout: float = 30.0):
        self.executable = executable or CHROMIUM
        self.width, self.height, self.timeout = width, height, timeout
        self.proc: subprocess.Popen | None = None
        self.ws: websocket.WebSocket | None = None
        self._ids = itertools.count(1)
        self._profile: str | None = None
        self.site_root: Path | None = None  # the site being checked: messages name its files relative to it
        self._reset_page_state()

    # --- process and connection -------------------------------------------------------------------------------

    def __enter__(self) -> Chromium:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if not self.executable:
            raise FileNotFoundError("no chromium on PATH")
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        log = open(Path(self._profile) / "stderr.log", "wb")  # noqa: SIM115 (closed once the process has it)
        self.proc = subprocess.Popen(
            [self.executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-port=0", f"--user-data-dir={self._profile}",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        log.close()
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        lines: list[str] = []
        while len(lines) < 2:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise CDPError(f"chromium did not start (exit {self.proc.poll()}):\n{self._stderr_tail()}")
            time.sleep(0.05)
            if port_file.exists():
                lines = port_file.read_text().split()
        port = int(lines[0])
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy for localhost
        while True:
            targets = json.loads(opener.open(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout).read())
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                break
            if time.monotonic() > deadline:
                raise CDPError(f"chromium has no page target: {targets}")
            time.sleep(0.05)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=self.timeout,
                                              suppress_origin=True, http_no_proxy=["127.0.0.1"])
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        # every page is checked as a first visit: nothing kept from the pages before (file:// pages share storage)
        self.send("Page.addScriptToEvaluateOnNewDocument",
                  source="try { localStorage.clear(); sessionStorage.clear(); } catch (e) {}")
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1,
                  mobile=False)

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                pass
            self.ws = None
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # the browser and its renderer/GPU/zygote children
                except ProcessLookupError:
                    pass
            self.proc.wait(timeout=30)
            self.proc = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    def _short(self, url: str) -> str:
        return short_url(url, self.site_root)

    def _where(self, stack: dict | None) -> str:
        frames = (stack or {}).get("callFrames") or []
        if not frames or not frames[0]["url"]:
            return ""
        return f" ({self._short(frames[0]['url'])}:{frames[0]['lineNumber'] + 1})"

    def _stderr_tail(self) -> str:
        try:
            return (Path(self._profile) / "stderr.log").read_text(errors="replace")[-3000:]
        except (OSError, TypeError):
            return ""

    # --- protocol ---------------------------------------------------------------------------------------------

    def _receive(self, timeout: float) -> dict | None:
        """The next message, dispatched if it is an event; None if none came within ``timeout`` seconds."""
        assert self.ws is not None, "the browser is not started"
        self.ws.settimeout(max(timeout, 0.001))
        try:
            message = json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            return None
        if "method" in message:
            self._dispatch(message["method"], message.get("params", {}))
        return message

    def send(self, method: str, timeout: float | None = None, **params) -> dict:
        """Run one command and return its result, dispatching the events that arrive meanwhile."""
        assert self.ws is not None, "the browser is not started"
        command_id = next(self._ids)
        self.ws.send(json.dumps({"id": command_id, "method": method, "params": params}))
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            message = self._receive(deadline - time.monotonic())
            if message is not None and message.get("id") == command_id:
                if "error" in message:
                    raise CDPError(f"{method}: {message['error']}")
                return message.get("result", {})
        raise CDPError(f"{method}: no answer within {timeout or self.timeout} s")

    def pump(self, seconds: float) -> None:
        """Dispatch the events that arrive within ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._receive(left)

    def evaluate(self, expression: str, timeout: float | None = None):
        """The value of a JavaScript expression in the page (a promise is awaited); raises on a JS exception."""
        result = self.send("Runtime.evaluate", timeout=timeout, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(f"JS error: {details.get('exception', {}).get('description') or details.get('text')}")
        return result.get("result", {}).get("value")

    def wait_until(self, expression: str, timeout: float, interval: float = 0.05):
        """Poll a JavaScript expression until it is truthy; its last value (falsy if the time ran out)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except CDPError:  # the page is navigating: no context to evaluate in
                value = None
            if value or time.monotonic() > deadline:
                return value
            self.pump(interval)

    # --- events of the page being checked ---------------------------------------------------------------------

    def _reset_page_state(self) -> None:
        self._recording = False
        self._loaders: set[str] = set()
        self._requests: dict[str, tuple[str, str]] = {}  # requestId -> (url, loaderId)
        self._pending: set[str] = set()  # requestIds of this page still loading
        self._loaded = False
        self._errors: list[str] = []
        self._failed_urls: set[str] = set()
        self._network_log: list[tuple[str, str]] = []  # Log.entryAdded from the network: (url, text)
        self._last_activity = time.monotonic()

    def _dispatch(self, method: str, params: dict) -> None:
        if method == "Network.requestWillBeSent":
            self._requests[params["requestId"]] = (params["request"]["url"], params.get("loaderId", ""))
            if params.get("loaderId") in self._loaders:
                self._pending.add(params["requestId"])
                self._last_activity = time.monotonic()
            return
        if method == "Page.frameNavigated" and self._recording and not params["frame"].get("parentId"):
            self._loaders.add(params["frame"]["loaderId"])  # a redirect (meta refresh) of the page being checked
            return
        if method in ("Network.loadingFinished", "Network.loadingFailed"):
            self._pending.discard(params["requestId"])
            self._last_activity = time.monotonic()
        if method == "Network.loadingFailed":
            url, loader = self._requests.get(params["requestId"], ("?", ""))
            if loader in self._loaders:
                self._failed_urls.add(url)
                reason = params.get("errorText", "") + (" (canceled)" if params.get("canceled") else "")
                self._errors.append(f"failed request: {self._short(url)}: {reason}")
        elif method == "Network.responseReceived":
            status = params["response"].get("status", 0)
            if params.get("loaderId") in self._loaders and status >= 400:
                self._failed_urls.add(params["response"]["url"])
                self._errors.append(f"HTTP {status}: {self._short(params['response']['url'])}")
        elif not self._recording:
            return
        elif method == "Page.loadEventFired":
            self._loaded = True
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(_remote_text(arg) for arg in params.get("args", []))
            self._errors.append(f"console.{params['type']}: {text}{self._where(params.get('stackTrace'))}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            where = f" ({self._short(details['url'])}:{details.get('lineNumber', 0) + 1})" if details.get("url") else ""
            text = text.splitlines()[0].removeprefix("Uncaught (in promise) ") if text else "?"
            kind = "unhandled promise rejection" if "in promise" in details.get("text", "") else "uncaught exception"
            self._errors.append(f"{kind}: {text}{where}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            if entry.get("source") == "network":
                self._network_log.append((entry.get("url", ""), entry.get("text", "")))
            else:
                self._errors.append(f"log error ({entry.get('source')}): {entry.get('text')}"
                                    f"{' at ' + self._short(entry['url']) if entry.get('url') else ''}")

    def page_errors(self, limit: int = 12) -> list[str]:
        """Console errors, exceptions, error log entries and failed requests of the page opened last. A network
        log entry is kept only if the Network domain did not already report its URL."""
        extra = [f"log error (network): {text} at {self._short(url)}" for url, text in self._network_log
                 if url not in self._failed_urls]
        errors = list(dict.fromkeys(self._errors + extra))
        return errors if len(errors) <= limit else errors[:limit] + [f"... and {len(errors) - limit} more errors"]

    def open(self, url: str, timeout: float = 20.0) -> list[str]:
        """Navigate the tab to ``url``; wait for the load event, a meta-refresh redirect, MathJax's first typesetting,
        the web fonts and a quiet network. Returns the problems met on the way (a timeout, a failed navigation)."""
        self._reset_page_state()
        deadline = time.monotonic() + timeout
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            return [f"navigation failed: {result['errorText']}"]
        self._loaders.add(result.get("loaderId", ""))
        self._recording = True
        while not self._loaded:
            if time.monotonic() > deadline:
                return [f"no load event within {timeout} s"]
            self._receive(deadline - time.monotonic())
        problems = []
        redirect = _REFRESH
        try:
            redirect = self.evaluate(f"!!document.querySelector({json.dumps(_REFRESH)})")
        except CDPError:  # already on its way to the redirect's target
            pass
        if redirect:  # wait for the target: a complete document that is not the redirect
            arrived = f"!document.querySelector({json.dumps(_REFRESH)}) && document.readyState === 'complete'"
            if not self.wait_until(arrived, timeout=max(deadline - time.monotonic(), 1)):
                problems.append("the meta refresh redirect did not happen")
        try:
            self.evaluate(_SETTLE, timeout=max(deadline - time.monotonic(), 1))
        except CDPError as error:
            problems.append(f"the page did not settle (MathJax, fonts): {error}")
        # a quiet network: no request of this page in flight, and none started or ended for 100 ms
        while (self._pending or time.monotonic() - self._last_activity < 0.1) and time.monotonic() < deadline:
            self._receive(0.05)
        if self._pending:
            problems.append("requests still loading after the time limit: "
                            + ", ".join(self._short(self._requests[r][0]) for r in sorted(self._pending)))
        return problems

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        """A PNG of the viewport (or of the whole page) as it is now."""
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": min(size[1], 16000), "scale": 1}
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


_REFRESH = "meta[http-equiv=Refresh i]"

# The page has settled: MathJax has typeset the page (if it has MathJax) and the web fonts are in.
_SETTLE = """(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await document.fonts.ready;
  await new Promise(r => requestAnimationFrame(() => r()));
  return true;
})()"""


def _remote_text(arg: dict) -> str:
    if "value" in arg:
        return str(arg["value"])
    return arg.get("description") or arg.get("unserializableValue") or arg.get("type", "?")


def short_url(url: str, root: Path | None = None) -> str:
    """A file:// URL as a path relative to ``root`` (else its last 3 parts), for readable messages."""
    if url.startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        if root is not None and path.startswith(f"{root.as_posix().rstrip('/')}/"):
            return path[len(root.as_posix().rstrip("/")) + 1:]
        return "/".join(path.split("/")[-3:])
    return url if len(url) < 200 else url[:200] + "..."


# --- the checks ----------------------------------------------------------------------------------------------------

def pages(html_root: Path) -> list[str]:
    """Every page of the site (POSIX paths relative to ``html_root``), but Sphinx's genindex.html and search.html and
    anything under _static."""
    html_root = Path(html_root)
    found = []
    for path in sorted(html_root.rglob("*.html")):
        relative = path.relative_to(html_root).as_posix()
        if relative in SKIPPED_PAGES or relative.startswith("_static/"):
            continue
        found.append(relative)
    return found


def page_url(html_root: Path, page: str) -> str:
    """The file:// URL of ``page`` (which may end in ``?query`` or ``#fragment``)."""
    path, sep, rest = page.partition("?") if "?" in page else page.partition("#")
    return (Path(html_root).resolve() / path).as_uri() + (sep + rest if sep else "")


# Images: lazy ones made eager, wait (bounded) for all to decode; the ones not loaded.
_IMAGES = """(async () => {
  const images = [...document.images];
  images.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  const timeout = new Promise(r => setTimeout(r, 5000));
  await Promise.race([Promise.all(images.map(i => i.decode().catch(() => null))), timeout]);
  return {count: images.length,
          broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))};
})()"""

# "Show code" toggles (every <details> closed at first): each in turn is scrolled to the middle of the screen, its
# summary must be what is on top there (not covered), a click on it must open it and show what it hid (for a folded
# cell, details.hide, its code). The toggles are left open, so the checks after this one see their content.
_TOGGLES = """(() => {
  const out = [];
  document.querySelectorAll('details').forEach((d, i) => {
    const s = d.querySelector(':scope > summary');
    if (d.open && s) return;
    const toggle = {index: i + 1, hide: d.classList.contains('hide'), opened: false, problems: []};
    out.push(toggle);
    if (!s) return toggle.problems.push('a <details> without a <summary>');
    s.scrollIntoView({block: 'center', behavior: 'instant'});
    const r = s.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) return toggle.problems.push('its summary is not shown, nothing to click');
    const hit = document.elementFromPoint(r.left + Math.min(r.width / 2, 40), r.top + r.height / 2);
    if (hit && !s.contains(hit)) toggle.problems.push('its summary is covered by ' + window.__describe(hit));
    s.click();
    if (!d.open) return toggle.problems.push('clicking its summary did not open it');
    toggle.opened = true;
    const shown = d.classList.contains('hide') ? d.querySelector('pre') : d.querySelector(':scope > :not(summary)');
    const box = shown && shown.getBoundingClientRect();
    if (!shown || box.height === 0 || box.width === 0 || getComputedStyle(shown).visibility === 'hidden')
      toggle.problems.push('opened, but its content is not visible: '
                           + (shown ? window.__describe(shown) : 'nothing inside'));
  });
  window.scrollTo({left: 0, top: 0, behavior: 'instant'});
  return out;
})()"""

_DESCRIBE = """window.__describe = (el) => {
  const names = typeof el.className === 'string' ? el.className.trim() : '';
  const cls = names ? '.' + names.split(/\\s+/).join('.') : '';
  const id = el.id ? '#' + el.id : '';
  const text = (el.textContent || '').replace(/\\s+/g, ' ').trim().slice(0, 60);
  return `<${el.tagName.toLowerCase()}${id}${cls}> "${text}"`;
}; true"""

# Formulas: every .math source element holds a typeset mjx-container, none is typeset with a TeX error, and no
# text outside code still shows a raw TeX delimiter.
_MATH = r"""(() => {
  const sources = [...document.querySelectorAll('.math')];
  const containers = document.querySelectorAll('mjx-container');
  const untypeset = sources.filter(m => !m.querySelector('mjx-container')).map(m => window.__describe(m));
  const errors = [...document.querySelectorAll('mjx-merror, [data-mjx-error]')]
    .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 100) + ' in '
         + window.__describe(e.closest('.math') || e.closest('mjx-container') || e));
  const skip = 'script, style, noscript, template, textarea, pre, code, kbd, samp, .highlight, mjx-container';
  const raw = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    if (!/\$\$|\\\(|\\\[/.test(node.data) || node.parentElement.closest(skip)) continue;
    const i = node.data.search(/\$\$|\\\(|\\\[/);
    raw.push(`"${node.data.slice(Math.max(0, i - 30), i + 40).replace(/\s+/g, ' ')}" in `
             + window.__describe(node.parentElement));
  }
  return {sources: sources.length, typeset: containers.length, untypeset, errors, raw};
})()"""

# Horizontal overflow at the window's width: the page itself, and every element whose right edge is past the
# viewport with no ancestor that clips or scrolls it sideways (only the outermost such element is reported).
_OVERFLOW = r"""(() => {
  const W = window.innerWidth, out = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > W) out.push(`the page is ${doc.scrollWidth} px wide, wider than the window (${W} px)`);
  const clipped = (el) => {
    for (let a = el.parentElement; a && a !== doc; a = a.parentElement)
      if (getComputedStyle(a).overflowX !== 'visible') return true;
    return false;
  };
  const reported = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || r.right + window.scrollX <= W + 1) continue;
    if (reported.some(p => p.contains(el)) || clipped(el)) continue;
    if (getComputedStyle(el).visibility === 'hidden') continue;
    reported.push(el);
    out.push(`${window.__describe(el)} reaches ${Math.round(r.right + window.scrollX)} px, past the ${W} px window`);
  }
  return out;
})()"""


def check_page(browser: Chromium, html_root: Path, page: str, stats: dict | None = None) -> list[str]:
    """The problems of one page (empty when fine): console errors and failed requests, images that did not load,
    formulas not typeset (or left as raw TeX), "show code" toggles that do not open, horizontal overflow.
    ``stats`` (optional) gets counts added: pages, images, formulas, toggles (details.hide), details."""
    browser.site_root = Path(html_root).resolve()
    problems = browser.open(page_url(html_root, page))
    browser.evaluate(_DESCRIBE)

    images = browser.evaluate(_IMAGES)
    problems += [f"image did not load: {src}" for src in images["broken"]]

    toggles = browser.evaluate(_TOGGLES)
    problems += [f"toggle {t['index']}: {problem}" for t in toggles for problem in t["problems"]]
    opened = [t for t in toggles if t["opened"] and not t["problems"]]

    math = browser.evaluate(_MATH)
    if math["typeset"] != math["sources"]:
        problems.append(f"{math['typeset']} typeset formulas (mjx-container) for {math['sources']} .math sources")
    problems += [f"formula not typeset: {m}" for m in math["untypeset"][:10]]
    problems += [f"formula with a TeX error: {m}" for m in math["errors"][:10]]
    problems += [f"raw TeX delimiter in the text: {m}" for m in math["raw"][:10]]

    overflow = browser.evaluate(_OVERFLOW)
    problems += [f"horizontal overflow: {m}" for m in overflow[:10]]
    if len(overflow) > 10:
        problems.append(f"horizontal overflow: ... and {len(overflow) - 10} more elements")

    browser.pump(0.02)  # the events of the clicks and checks (a late exception)
    problems += browser.page_errors()
    if stats is not None:
        for key, value in (("pages", 1), ("images", images["count"]), ("formulas", math["typeset"]),
                           ("toggles", sum(t["hide"] for t in opened)), ("details", len(opened))):
            stats[key] = stats.get(key, 0) + value
    return problems


def check_search(browser: Chromium, html_root: Path, word: str = "attention", timeout: float = 20.0) -> list[str]:
    """The problems of Sphinx's search page, opened offline with ``?q=word``: it must list at least one result
    within ``timeout`` seconds, with no console error or failed request."""
    browser.site_root = Path(html_root).resolve()
    problems = browser.open(page_url(html_root, f"search.html?q={urllib.parse.quote(word)}"))
    count = browser.wait_until("document.querySelectorAll('#search-results ul.search > li').length", timeout)
    if not count:
        status = browser.evaluate("(document.querySelector('#search-results') || {}).innerText || ''")
        problems.append(f"search for {word!r} listed no result within {timeout} s: {status.strip()[:200]!r}")
    else:
        # the list grows one result every 5 ms; let it finish so that the errors of every result are seen
        browser.wait_until("/Search finished|did not match/.test("
                           "(document.querySelector('#search-results p.search-summary') || {}).innerText || '')",
                           timeout)
    browser.pump(0.2)
    return problems + _summary_fetches(browser.page_errors(limit=10_000), browser.site_root)


def _summary_fetches(errors: list[str], root: Path | None, limit: int = 12) -> list[str]:
    """``errors`` with the three errors that each result's summary fetch makes offline (Sphinx's searchtools.js
    fetch()es every result's page, which Chromium blocks for file:// URLs: a CORS log error, a failed request, an
    unhandled rejection) told once, with their count."""
    cors = [e for e in errors if "blocked by CORS policy" in e and "Access to fetch at 'file://" in e]
    if cors:
        pages = {e.split("Access to fetch at '", 1)[1].split("'", 1)[0] for e in cors}
        fetched = {short_url(url, root) for url in pages}
        same = [e for e in errors if e in cors or "Failed to fetch (" in e and "searchtools.js" in e
                or e.startswith("failed request: ") and e.endswith(": net::ERR_FAILED")
                and e.removeprefix("failed request: ").removesuffix(": net::ERR_FAILED") in fetched]
        errors = [e for e in errors if e not in same] + [
            f"the search page fetch()es each result's page for its summary, which a browser blocks for file:// "
            f"pages: {len(pages)} fetches blocked, {len(same)} errors (CORS log errors, failed requests, unhandled "
            f"rejections in searchtools.js), e.g. {cors[0]}"]
    return errors if len(errors) <= limit else errors[:limit] + [f"... and {len(errors) - limit} more errors"]


def screenshot(browser: Chromium, html_root: Path, page: str, path: Path, full_page: bool = False) -> Path:
    """A PNG of ``page`` (which may end in ``?query``) at the browser's window size, once it has settled."""
    browser.open(page_url(html_root, page))
    if page.startswith("search.html"):
        browser.wait_until("document.querySelectorAll('#search-results ul.search > li').length", 20)
        browser.pump(0.3)
    return browser.screenshot(path, full_page=full_page)


# --- links (static) ------------------------------------------------------------------------------------------------

class _PageParser(HTMLParser):
    """The ids/names a page defines and the internal URLs it refers to (href, src, meta refresh)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.anchors: set[str] = set()
        self.links: list[tuple[str, str]] = []  # (tag, url)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.anchors.add(attrs["id"])
        if tag == "a" and attrs.get("name"):  # the other target of a #fragment
            self.anchors.add(attrs["name"])
        for key in ("href", "src"):
            if attrs.get(key) is not None:
                self.links.append((tag, attrs[key]))
        if tag == "meta" and (attrs.get("http-equiv") or "").lower() == "refresh":
            _, _, target = (attrs.get("content") or "").partition("url=")
            if target:
                self.links.append(("meta refresh", target.strip().strip("'\"")))


def _parse(path: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(path.read_text(errors="replace"))
    parser.close()
    return parser


def check_links(html_root: Path, stats: dict | None = None) -> list[str]:
    """Every internal href/src (relative or file:, not http(s):, mailto:, data:, javascript:) of every page of the
    site (genindex.html and search.html included; _static's own files are not pages) points to an existing file,
    and a #fragment on an .html target is an id (or an <a name>) of that page. ``stats`` (optional) gets counts
    added: link_pages, links and fragments checked."""
    html_root = Path(html_root).resolve()
    problems = []
    parsed: dict[Path, _PageParser] = {}

    def parse(path: Path) -> _PageParser:
        if path not in parsed:
            parsed[path] = _parse(path)
        return parsed[path]

    sources = sorted(p for p in html_root.rglob("*.html") if not p.relative_to(html_root).as_posix().startswith(
        "_static/"))
    missing: dict[str, list[str]] = defaultdict(list)
    links = fragments = 0
    for source in sources:
        for tag, url in parse(source).links:
            url = url.strip()
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("", "file") or parts.netloc or url.startswith("//"):
                continue  # http(s), mailto, data, javascript, protocol-relative: not this site's
            if parts.scheme == "file":
                target = Path(urllib.parse.unquote(parts.path))
            elif parts.path:
                target = (source.parent / urllib.parse.unquote(parts.path)).resolve()
            else:
                target = source  # "#fragment" or "?query" on this page
            where = f"{source.relative_to(html_root).as_posix()}: <{tag}> {url}"
            links += 1
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                missing[where].append("no such file")
                continue
            try:
                target.relative_to(html_root)
            except ValueError:
                missing[where].append("outside the site")
                continue
            if parts.fragment and target.suffix == ".html":
                fragment = urllib.parse.unquote(parts.fragment)
                fragments += 1
                if fragment not in parse(target).anchors:
                    missing[where].append(f"no id {fragment!r} in {target.relative_to(html_root).as_posix()}")
    if stats is not None:
        for key, value in (("link_pages", len(sources)), ("links", links), ("fragments", fragments)):
            stats[key] = stats.get(key, 0) + value
    for where, reasons in missing.items():
        problems.append(f"dead link: {where} ({'; '.join(dict.fromkeys(reasons))})")
    return problems
