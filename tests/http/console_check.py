"""The console (GET /) in a real browser: headless Chromium driven through chromedriver's W3C
WebDriver endpoint, with nothing but Python's standard library (urllib and json). Run by
tests/http_console.rs:

    python3 console_check.py --console http://HOST:PORT/ --webdriver http://127.0.0.1:PORT \
        --paxkv PATH --config CLUSTER.toml --screenshots DIR [--profile DIR]

It opens the console, finds the five members voting and their charts drawn, creates a key
through the form and finds it in the list, follows the key's prefix and sees the event of a
put made by the paxkv CLI, then opens the key, lets the CLI change it behind the page's back,
saves an edit from the page and finds the 412 shown (and the CLI's value kept), and at last
deletes the key from the page (a compare-and-set on the version opened again). A screenshot
is saved after each step (and on a failure), and each one's path printed. Every wait polls a
condition until a deadline. Prints "ok" and exits 0 when every check holds; otherwise prints
what failed, the page's status line and the browser's log, and exits 1."""
import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

# The W3C name of an element reference in WebDriver's JSON.
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
# How long one step may take to show its result in the page.
STEP_DEADLINE = 30.0
# How long chromedriver may take to answer and Chromium to start.
START_DEADLINE = 60.0
# How long a poll waits before it looks again.
POLL = 0.1
# How long one CLI call may take.
CLI_DEADLINE = 30.0

PREFIX = "console/"
FORM_KEY = PREFIX + "greeting"
CLI_KEY = PREFIX + "from-cli"


class WebDriverError(Exception):
    def __init__(self, error, message):
        super().__init__(f"{error}: {message}")
        self.error = error


def call(url, method, body=None, timeout=START_DEADLINE):
    """One WebDriver command; its `value`, or WebDriverError with the driver's error."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}").get("value")
    except urllib.error.HTTPError as e:
        try:
            value = json.loads(e.read()).get("value", {})
        except ValueError:
            value = {}
        raise WebDriverError(value.get("error", f"HTTP {e.code}"), value.get("message", "")) from None


def wait_until(what, probe, deadline=STEP_DEADLINE):
    """Polls `probe` until it returns something truthy, and returns that; fails with `what`
    and the last thing seen after `deadline` seconds."""
    until = time.monotonic() + deadline
    last = None
    while True:
        try:
            last = probe()
        except WebDriverError as e:
            # An element replaced while it was read (the page redraws its tables): look again.
            if e.error != "stale element reference":
                raise
            last = e
        if last:
            return last
        if time.monotonic() >= until:
            raise AssertionError(f"timed out after {deadline:.0f} s waiting for {what}; last seen: {last!r}")
        time.sleep(POLL)


class Browser:
    """A WebDriver session of headless Chromium."""

    def __init__(self, webdriver, chromium, profile):
        self.webdriver = webdriver.rstrip("/")
        wait_until(
            "chromedriver to be ready",
            lambda: self._ready(),
            deadline=START_DEADLINE,
        )
        args = [
            "--headless=new",
            # Root in a container has no usable sandbox; the page is our own, on loopback.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1280,1700",
            f"--user-data-dir={profile}",
        ]
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"implicit": 0, "pageLoad": 30000, "script": 30000},
        }
        value = call(
            self.webdriver + "/session", "POST", {"capabilities": {"alwaysMatch": capabilities}}
        )
        self.session = f"{self.webdriver}/session/{value['sessionId']}"

    def _ready(self):
        try:
            return call(self.webdriver + "/status", "GET", timeout=5).get("ready")
        except (OSError, WebDriverError):
            return False

    def command(self, method, path, body=None):
        if method == "POST" and body is None:
            body = {}
        return call(self.session + path, method, body)

    def go(self, url):
        self.command("POST", "/url", {"url": url})

    def find(self, css):
        """The element `css` selects, or None."""
        found = self.command("POST", "/elements", {"using": "css selector", "value": css})
        return found[0][ELEMENT] if found else None

    def element(self, css):
        return wait_until(f"an element {css}", lambda: self.find(css))

    def click(self, css):
        # The page may redraw the element between finding and clicking it: find it again.
        def attempt():
            self.command("POST", f"/element/{self.element(css)}/click")
            return True

        wait_until(f"a click on {css}", attempt)

    def type(self, css, text):
        element = self.element(css)
        self.command("POST", f"/element/{element}/clear")
        self.command("POST", f"/element/{element}/value", {"text": text})

    def run(self, script, *args):
        return self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    def text(self, css):
        """The text `css` shows (as a user sees it), or None if there is no such element."""
        return self.run(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;", css
        )

    def screenshot(self, path):
        png = base64.b64decode(self.command("GET", "/screenshot"))
        with open(path, "wb") as f:
            f.write(png)
        print(f"screenshot: {path}", flush=True)

    def log(self):
        """The browser's console log (chromedriver's extension), or None where it has none."""
        try:
            return self.command("POST", "/se/log", {"type": "browser"})
        except WebDriverError:
            return None

    def quit(self):
        try:
            self.command("DELETE", "")
        except (OSError, WebDriverError):
            pass


def cli_put(args, key, value):
    """`paxkv put KEY VALUE` against the test cluster; the version it made."""
    out = subprocess.run(
        [args.paxkv, "--config", args.config, "put", key, value],
        capture_output=True,
        text=True,
        timeout=CLI_DEADLINE,
    )
    if out.returncode != 0 or not out.stdout.startswith("ok (version "):
        raise AssertionError(f"paxkv put {key}: exit {out.returncode}: {out.stdout}{out.stderr}")
    return int(out.stdout.split("version ")[1].rstrip(")\n"))


def http_get(args, path):
    """A GET to the node serving the console: status, ETag and body."""
    request = urllib.request.Request(args.console.rstrip("/") + path)
    try:
        with urllib.request.urlopen(request, timeout=CLI_DEADLINE) as response:
            return response.status, response.headers.get("ETag"), response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("ETag"), e.read()


def status_with(browser, text):
    """A probe: the status line, once it says `text`."""

    def probe():
        line = browser.text("#status") or ""
        return line if text in line else None

    return probe


def members_voting(browser):
    """Step 1: the five members are shown voting, and each node's charts have a sample."""

    def voting_rows():
        rows = browser.run(
            "return Array.from(document.querySelectorAll('#members tbody tr[data-node]'))"
            ".map(r => [r.dataset.node, r.querySelector('.state').innerText.trim()]);"
        )
        return rows if len(rows) == 5 and all(state == "voting" for _, state in rows) else None

    rows = wait_until("five members shown voting", voting_rows)
    assert sorted(node for node, _ in rows) == ["1", "2", "3", "4", "5"], rows
    wait_until("the epoch in the header", lambda: (browser.text("#epoch") or "").isdigit())
    # Two polls give a rate: every node's card shows one, with its two charts.
    wait_until(
        "a request rate and two charts for each of the five nodes",
        lambda: browser.run(
            "const cards = Array.from(document.querySelectorAll('#charts .chart-card'));"
            "return cards.length === 5 && cards.every(c => c.querySelectorAll('svg').length === 2"
            " && /\\/s$/.test(c.querySelector('[data-metric=rate]').innerText));"
        ),
    )


def create_and_list(browser):
    """Step 2: a key created through the form appears in the list."""
    browser.type("#prefix", PREFIX)
    browser.click("#list-button")
    wait_until(
        "the empty listing of the prefix",
        lambda: f"No keys with prefix {PREFIX}" in (browser.text("#keys tbody") or ""),
    )
    browser.type("#key", FORM_KEY)
    browser.type("#value", "hello from the browser")
    browser.click("#create")
    status = wait_until("the create's outcome on the status line", status_with(browser, "Created"))
    assert "version 1" in status, status
    browser.click("#list-button")
    row = f'#keys tbody tr[data-key="{FORM_KEY}"]'
    wait_until(f"{FORM_KEY} in the list", lambda: browser.find(row))
    shown = browser.text(row)
    assert "hello from the browser" in shown and "1" in shown, shown


def watch_sees_a_cli_put(browser, args):
    """Step 3: following the prefix, the page shows the event of a put made by the CLI.

    The stream is open once the page says "following", but the node may take a moment more
    to begin the watch: a put made before that is not an event of it. So put, wait a while
    for its event, and put again (a new value each time) until one shows or the deadline
    passes."""
    browser.type("#watch-prefix", PREFIX)
    browser.click("#watch-toggle")
    wait_until("the watch to be following", lambda: browser.text("#watch-state") == "following")
    entry = f'#watch-log li[data-key="{CLI_KEY}"]'
    until = time.monotonic() + STEP_DEADLINE
    attempt = 0
    while True:
        attempt += 1
        cli_put(args, CLI_KEY, f"hello from the CLI {attempt}")
        try:
            wait_until(f"the watch event of {CLI_KEY}", lambda: browser.find(entry), deadline=3)
            break
        except AssertionError:
            if time.monotonic() >= until:
                raise AssertionError(
                    f"no watch event of {CLI_KEY} shown after {attempt} CLI puts in {STEP_DEADLINE:.0f} s"
                ) from None
    shown = browser.text(entry)
    assert "hello from the CLI" in shown and "v" in shown, shown


def stale_edit_shows_412(browser, args):
    """Step 4: an edit of a version the CLI has replaced is refused, and the page says so."""
    browser.click(f'#keys tbody tr[data-key="{FORM_KEY}"] button')
    wait_until(
        f"{FORM_KEY} opened at version 1",
        lambda: browser.text("#version") == "Version 1"
        and browser.run("return document.getElementById('value').value;") == "hello from the browser",
    )
    version = cli_put(args, FORM_KEY, "changed by the CLI")
    assert version == 2, version
    browser.type("#value", "edited in the browser")
    browser.click("#save")
    status = wait_until("the 412 on the status line", status_with(browser, "412 Precondition Failed"))
    assert "Precondition Failed" in status and "version 2" in status, status
    assert browser.run("return document.getElementById('status').className;") == "error"
    assert "now at version 2" in browser.text("#version"), browser.text("#version")
    # The CLI's value stands; the page's edit was not written.
    status_code, etag, body = http_get(args, "/v1/kv/console%2Fgreeting")
    assert (status_code, etag, body) == (200, '"2"', b"changed by the CLI"), (status_code, etag, body)
    # The watch showed the CLI's change of the opened key too.
    wait_until(
        f"the watch event of {FORM_KEY} version 2",
        lambda: browser.find(f'#watch-log li[data-key="{FORM_KEY}"][data-version="2"]'),
    )


def delete_the_opened_version(browser):
    """Step 5: the key opened again (version 2) is deleted from the page (two clicks: the
    first arms the button), as a compare-and-set on that version; the list drops it and the
    watch shows the delete."""
    row = f'#keys tbody tr[data-key="{FORM_KEY}"]'
    wait_until(
        f"{FORM_KEY} listed at version 2",
        lambda: "changed by the CLI" in (browser.text(row) or ""),
    )
    browser.click("#open")
    wait_until(f"{FORM_KEY} opened at version 2", lambda: browser.text("#version") == "Version 2")
    browser.click("#delete")
    browser.click("#delete")
    status = wait_until("the delete's outcome on the status line", status_with(browser, "Deleted"))
    assert "version 3 (compare-and-set on version 2)" in status, status
    wait_until(f"{FORM_KEY} gone from the list", lambda: browser.find(row) is None)
    deleted = f'#watch-log li[data-key="{FORM_KEY}"][data-version="3"]'
    wait_until(f"the watch event of the delete of {FORM_KEY}", lambda: browser.find(deleted))
    assert "deleted" in browser.text(deleted), browser.text(deleted)


def severe_errors(log):
    """Errors in the browser's log other than the answers the checks provoke on purpose
    (Chromium logs every non-2xx answer, the 412 included, as a failed resource)."""
    return [
        entry
        for entry in log or []
        if entry.get("level") == "SEVERE" and "Failed to load resource" not in entry.get("message", "")
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--console", required=True, help="the console's URL")
    parser.add_argument("--webdriver", required=True, help="chromedriver's URL")
    parser.add_argument("--paxkv", required=True, help="the paxkv binary")
    parser.add_argument("--config", required=True, help="a config naming the cluster's nodes")
    parser.add_argument("--screenshots", required=True, help="where to save the screenshots")
    parser.add_argument(
        "--profile", help="an empty directory for Chromium's profile (default: a temporary one)"
    )
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    os.makedirs(args.screenshots, exist_ok=True)
    shot = lambda name: os.path.join(args.screenshots, name)

    profile = args.profile or tempfile.mkdtemp(prefix="paxkv-console-chromium-")
    browser = None
    try:
        browser = Browser(args.webdriver, args.chromium, profile)
        browser.go(args.console)
        title = wait_until("the console's title", lambda: browser.run("return document.title;"))
        assert title == "paxkv console", title

        members_voting(browser)
        browser.screenshot(shot("1-members-voting.png"))
        create_and_list(browser)
        browser.screenshot(shot("2-key-created-and-listed.png"))
        watch_sees_a_cli_put(browser, args)
        browser.screenshot(shot("3-watch-event-of-a-cli-put.png"))
        stale_edit_shows_412(browser, args)
        browser.screenshot(shot("4-stale-edit-412.png"))
        delete_the_opened_version(browser)
        browser.screenshot(shot("5-deleted.png"))

        log = browser.log()
        if log is None:
            print("note: chromedriver gave no browser log; its errors were not checked")
        errors = severe_errors(log)
        assert not errors, f"errors in the browser's log: {errors}"
        print("ok")
        return 0
    except Exception:
        print("FAILED:", flush=True)
        traceback.print_exc(file=sys.stdout)
        if browser is not None:
            try:
                print(f"status line: {browser.text('#status')!r}")
                print(f"browser log: {json.dumps(browser.log(), indent=1)}")
                browser.screenshot(shot("failure.png"))
            except Exception as e:  # the browser itself may be what failed
                print(f"(the browser could not be asked more: {e})")
        return 1
    finally:
        if browser is not None:
            browser.quit()
        if not args.profile:
            shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
