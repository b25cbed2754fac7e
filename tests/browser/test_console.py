#!/usr/bin/python3
"""tests/browser/test_console.py - CTest: browser_console.

The web console in a real Chromium (Debian's chromium, chromium-driver and
python3-selenium, headless), against the real keygate daemon and a loopback
upstream: sign up, create a key with a 90-day expiry and two scopes, copy it
(read back through the clipboard), use it through the gateway (a scope it
lacks gets 403), close the reveal (the key is gone from the DOM, a reload
does not bring it back), revoke through the confirmation (401 within 1 s),
regenerate an expired key, a wrong password (an error, no session),
sign-out (the API answers 401), a cross-site form post (refused), another
user's key id (404), a tab-order walk through the create dialog, and the
page at 360 px. Screenshots of the table, the create dialog and the reveal
go to docs/img/.

Exit 77 (skipped) when Chromium cannot start, unless KEYGATE_REQUIRE_BROWSER=1.
"""
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

SKIP = 77
BIN = os.environ.get("KEYGATE_BIN")
SRC = os.environ.get("KEYGATE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
REQUIRE = os.environ.get("KEYGATE_REQUIRE_BROWSER") == "1"
EMAIL = "dev@acme.test"
PASSWORD = "SecurePass123!"
BOB_PASSWORD = "Bob secret 4242"
DEADLINE = time.monotonic() + 240  # the whole run


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def until(fn, what, timeout=10.0):
    end = min(time.monotonic() + timeout, DEADLINE)
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    fail("timed out waiting for " + what)


class Upstream(http.server.BaseHTTPRequestHandler):
    """The API keygate protects (200 JSON), and on another port an 'evil'
    page that posts a form to the console."""
    evil_target = None

    def log_message(self, *a):
        pass

    def _answer(self):
        if self.path.startswith("/evil") and Upstream.evil_target:
            body = ('<!doctype html><form id="f" method="POST" action="%s" '
                    'enctype="text/plain"><input name=\'{"name":"x","a":"\' value=\'"}\'>'
                    '</form><script>document.getElementById("f").submit()</script>'
                    % Upstream.evil_target).encode()
            ctype = "text/html"
        else:
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            body = json.dumps({"path": self.path}).encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer


def request(method, url, key=None, body=None, headers=None):
    req = urllib.request.Request(url, method=method, data=body)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with OPENER.open(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""


# Loopback only: no proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def cli(conf, *args, stdin=None):
    return subprocess.run([BIN] + list(args) + ["-c", conf], input=stdin, capture_output=True,
                          text=True, timeout=60)


def start_browser(width=1280, height=900):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=%d,%d" % (width, height), "--no-first-run",
              "--disable-background-networking", "--disable-extensions"):
        opts.add_argument(a)
    svc = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(service=svc, options=opts)


def main():
    if not BIN:
        fail("KEYGATE_BIN is not set (run through ctest)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        print("python3-selenium is not installed", file=sys.stderr)
        sys.exit(1 if REQUIRE else SKIP)
    try:
        driver = start_browser()
    except Exception as e:  # no Chromium, no driver, or it cannot start here
        print("Chromium cannot start: %s" % str(e).splitlines()[0], file=sys.stderr)
        sys.exit(1 if REQUIRE else SKIP)

    tmp = tempfile.mkdtemp(prefix="kg-browser-")
    up_port, evil_port, port, admin_port = free_port(), free_port(), free_port(), free_port()
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", p), Upstream)
               for p in (up_port, evil_port)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    conf = os.path.join(tmp, "keygate.conf")
    with open(conf, "w") as f:
        f.write("listen 127.0.0.1:%d\nadmin_listen 127.0.0.1:%d\nupstream http://127.0.0.1:%d\n"
                "database %s/keygate.db\nsecret_file %s/secret\n"
                "console on\nsignup on\nsignup_role read:items,write:items\n"
                "route GET /items/* read:items\nroute POST /items/* write:items\n"
                "route GET /admin/* admin:all\n"
                "scope read:items \"Read items\"\nscope write:items \"Create and change items\"\n"
                % (port, admin_port, up_port, tmp, tmp))
    base = "http://127.0.0.1:%d" % port
    Upstream.evil_target = base + "/console/api/keys"
    log = open(os.path.join(tmp, "keygate.log"), "w")
    daemon = None
    try:
        daemon = subprocess.Popen([BIN, "serve", "-c", conf], stdout=log, stderr=subprocess.STDOUT)
        until(lambda: request("GET", base + "/console/")[0] == 200, "the daemon")
        run(driver, base, conf, evil_port)
    finally:
        driver.quit()
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        for s in servers:
            s.shutdown()
        log.close()
        with open(os.path.join(tmp, "keygate.log")) as f:
            text = f.read()
        for secret in SECRETS:
            check(secret not in text, "a key or password reached the daemon's log")
        for report in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            check(report not in text, "a sanitizer report in the daemon's log")
        check(daemon is None or daemon.returncode == 0,
              "the daemon exited with %s" % (daemon.returncode if daemon else None))
        shutil.rmtree(tmp, ignore_errors=True)
    print("browser_console: all checks passed")


SECRETS = [PASSWORD, BOB_PASSWORD]


def shot(driver, name):
    path = os.path.join(SRC, "docs", "img", name)
    driver.save_screenshot(path)


def run(driver, base, conf, evil_port):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    el = lambda i: driver.find_element(By.ID, i)
    visible = lambda i: el(i).is_displayed()
    driver.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": base, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})

    # ---- sign up through the page (the signup endpoint), first key revealed once ----
    driver.get(base + "/console/")
    until(lambda: visible("signup-offer"), "the Create account offer")
    el("show-signup").click()
    el("signup-email").send_keys(EMAIL)
    el("signup-password").send_keys(PASSWORD)
    el("signup-btn").click()
    until(lambda: visible("reveal-dialog"), "the signup key's reveal", 30)
    first = el("reveal-key").get_attribute("value")
    SECRETS.append(first)
    check(first.startswith("kg_"), "the signup key is shown")
    el("reveal-close").click()
    until(lambda: visible("keys-view"), "the keys view")

    # ---- create: tab order, 90 days, two scopes ----
    el("create-btn").click()
    until(lambda: visible("create-dialog"), "the create dialog")
    check(driver.switch_to.active_element.get_attribute("id") == "key-name", "focus on the name")
    order = ["key-name"]
    for _ in range(5):
        driver.switch_to.active_element.send_keys(Keys.TAB)
        order.append(driver.switch_to.active_element.get_attribute("id"))
    check(order == ["key-name", "key-expiry", "scope-0", "scope-1", "create-submit",
                    "create-cancel"], "tab order through the create dialog: %s" % order)
    for i in ("key-name", "key-expiry", "scope-0", "scope-1"):
        check(driver.find_elements(By.CSS_SELECTOR, "label[for='%s']" % i), "%s is labelled" % i)
    el("key-name").send_keys("Lab pipeline")
    Select(el("key-expiry")).select_by_value("90d")
    el("scope-0").click()
    el("scope-1").click()
    shot(driver, "console-create.png")
    el("create-submit").click()
    until(lambda: visible("reveal-dialog"), "the new key's reveal", 20)
    key = el("reveal-key").get_attribute("value")
    SECRETS.append(key)
    check(len(key) > 40 and key.startswith("kg_"), "the reveal shows the key")
    el("copy-btn").click()
    until(lambda: el("copied").text == "Copied", "the Copied confirmation")
    copied = driver.execute_async_script(
        "var done = arguments[0]; navigator.clipboard.readText().then(done, function () { done(null); });")
    if copied is not None:
        check(copied == key, "the clipboard holds the key")
    shot(driver, "console-reveal.png")

    # the copied key works through the gateway; a scope it lacks is 403
    check(request("GET", base + "/items/1", key)[0] == 200, "the new key is admitted")
    check(request("POST", base + "/items/1", key, b"{}")[0] == 200, "write:items is granted")
    check(request("GET", base + "/admin/x", key)[0] == 403, "a scope the key lacks gets 403")

    # ---- close the reveal: the key is gone, and a reload does not bring it back ----
    el("reveal-close").click()
    until(lambda: not visible("reveal-dialog"), "the reveal to close")
    check(key not in driver.page_source, "the key is still in the DOM after closing")
    check(el("reveal-key").get_attribute("value") == "", "the reveal field is empty")
    driver.refresh()
    until(lambda: visible("keys-view"), "the keys view after a reload")
    until(lambda: "Lab pipeline" in el("keys-body").text, "the new key in the table")
    check(key not in driver.page_source, "a reload brought the key back")
    row = driver.find_element(By.XPATH, "//tr[td[@class='name' and text()='Lab pipeline']]")
    check(row.find_element(By.CLASS_NAME, "key").text == "\u2022" * 5 + key[-4:],
          "the key column is masked as •••••last4")
    check(row.find_element(By.CLASS_NAME, "last-used").text != "Never", "last used is shown")
    check(row.find_element(By.CLASS_NAME, "state").text == "Active", "the state is Active")
    key_id = row.get_attribute("data-id")
    check(not visible("expiring-banner"), "no expiry banner while no key expires soon")

    # ---- operator-made keys: a canary, an allowlist expiring in 7 days ----
    for args in (["--name", "Honeypot", "--canary"],
                 ["--name", "Office only", "--allow-ip", "10.0.0.0/8,2001:db8::/32",
                  "--expires", "7d"]):
        r = cli(conf, "keys", "create", "--tenant", "signup", "--user", EMAIL, "--json", *args)
        check(r.returncode == 0, "keys create %s: %s" % (args[1], r.stderr))
        SECRETS.append(json.loads(r.stdout)["key"])
    driver.refresh()
    until(lambda: "Office only" in el("keys-body").text, "the operator's keys in the table")
    row = driver.find_element(By.XPATH, "//tr[td[@class='name' and text()='Honeypot']]")
    badge = row.find_elements(By.CSS_SELECTOR, "td.name .badge.canary")
    check(len(badge) == 1 and badge[0].text.startswith("Canary"), "the canary key has a badge")
    check("never grants access" in badge[0].get_attribute("title") and
          "reported" in badge[0].get_attribute("title"), "the badge's title explains it")
    check(not row.find_elements(By.CLASS_NAME, "reminder"), "no reminder on a key without expiry")
    row = driver.find_element(By.XPATH, "//tr[td[@class='name' and text()='Office only']]")
    check(not row.find_elements(By.CLASS_NAME, "badge"), "no canary badge on a normal key")
    cidrs = [c.text for c in row.find_elements(By.CSS_SELECTOR, "td.name .ips code")]
    check(cidrs == ["10.0.0.0/8", "2001:db8::/32"], "the allowlist is shown: %s" % cidrs)
    rem = row.find_element(By.CSS_SELECTOR, "td.expires .reminder").text
    check(rem == "Expires in 7 days \u2014 regenerate it before then", "the reminder: %r" % rem)
    check(visible("expiring-banner") and el("expiring-banner").text.startswith(
        "1 of your keys expires within 14 days"), "the expiry banner above the table")
    shot(driver, "console-keys.png")
    driver.set_window_size(360, 800)
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
    check(overflow <= 0, "the keys table scrolls sideways at 360 px (%d px)" % overflow)
    check(row.find_element(By.CSS_SELECTOR, "td.name .ips").is_displayed() and
          row.find_element(By.CSS_SELECTOR, "td.expires .reminder").is_displayed(),
          "allowlist and reminder are shown at 360 px")
    driver.set_window_size(1280, 900)

    # ---- an expired key regenerates ----
    r = cli(conf, "keys", "create", "--name", "Old script", "--tenant", "signup", "--user", EMAIL,
            "--expires", "2s", "--json")
    check(r.returncode == 0, "keys create for the expired key: " + r.stderr)
    SECRETS.append(json.loads(r.stdout)["key"])
    time.sleep(2.5)
    el("show-all").click()
    until(lambda: "Old script" in el("keys-body").text, "the expired key with Show all")
    old = driver.find_element(By.XPATH, "//tr[td[@class='name' and text()='Old script']]")
    check(old.find_element(By.CLASS_NAME, "state").text == "Expired", "the old key is Expired")
    old.find_element(By.CLASS_NAME, "regen").click()
    until(lambda: visible("regen-dialog"), "the regenerate confirmation")
    el("regen-confirm").click()
    until(lambda: visible("reveal-dialog"), "the regenerated key's reveal", 20)
    fresh = el("reveal-key").get_attribute("value")
    SECRETS.append(fresh)
    check(request("GET", base + "/items/2", fresh)[0] == 200, "the regenerated key works")
    el("reveal-close").click()
    until(lambda: not visible("reveal-dialog"), "the reveal to close")

    # ---- revoke through the confirmation: 401 within a second ----
    row = driver.find_element(By.XPATH, "//tr[@data-id='%s']" % key_id)
    row.find_element(By.CLASS_NAME, "revoke").click()
    until(lambda: visible("revoke-dialog"), "the revoke confirmation")
    text = el("revoke-dialog").text
    check("immediate and permanent" in text and "401" in text, "the confirmation says why")
    el("revoke-confirm").click()
    t0 = time.monotonic()
    until(lambda: request("GET", base + "/items/1", key)[0] == 401, "401 for the revoked key", 1.0)
    check(time.monotonic() - t0 < 1.0, "revocation took effect within 1 s")

    # ---- cross-site form post: refused ----
    cookie = driver.get_cookie("keygate_console")
    check(cookie is not None and cookie.get("httpOnly") and cookie.get("sameSite") == "Strict",
          "the session cookie is HttpOnly and SameSite=Strict")
    before = request("GET", base + "/console/api/keys?state=all",
                  headers={"Cookie": "keygate_console=" + cookie["value"]})[1]
    driver.get("http://127.0.0.1:%d/evil" % evil_port)
    until(lambda: "refused" in driver.page_source or "signed in" in driver.page_source,
          "the cross-site post's answer")
    check("Cross-site request refused" in driver.page_source, "the cross-site post is refused")
    after = request("GET", base + "/console/api/keys?state=all",
                 headers={"Cookie": "keygate_console=" + cookie["value"]})[1]
    check(len(json.loads(after)["data"]) == len(json.loads(before)["data"]),
          "the cross-site post created nothing")

    # ---- sign out: the API answers 401 to the old cookie ----
    driver.get(base + "/console/")
    until(lambda: visible("keys-view"), "the keys view")
    el("signout-btn").click()
    until(lambda: visible("signin-view"), "the sign-in form")
    check(request("GET", base + "/console/api/keys",
               headers={"Cookie": "keygate_console=" + cookie["value"]})[0] == 401,
          "the API answers 401 after sign-out")

    # ---- a wrong password: an error, no session ----
    el("login").send_keys(EMAIL)
    el("password").send_keys("Wrong password 1")
    el("signin-btn").click()
    until(lambda: el("signin-error").text != "", "the sign-in error")
    check("Invalid" in el("signin-error").text, "the error says the credentials are wrong")
    check(driver.get_cookie("keygate_console") is None or
          driver.get_cookie("keygate_console")["value"] == "", "no session after a wrong password")

    # ---- another user's key id is 404 ----
    r = cli(conf, "users", "create", "--username", "bob", "--email", "bob@acme.test")
    check(r.returncode == 0, "users create bob: " + r.stderr)
    r = cli(conf, "users", "passwd", "bob", stdin=BOB_PASSWORD + "\n")
    check(r.returncode == 0, "users passwd bob: " + r.stderr)
    el("login").clear()
    el("login").send_keys("bob")
    el("password").send_keys(BOB_PASSWORD)
    el("signin-btn").click()
    until(lambda: visible("keys-view"), "bob's keys view", 20)
    until(lambda: visible("empty"), "bob's empty state with the create button")
    status = driver.execute_async_script("""
        var done = arguments[arguments.length - 1], id = arguments[0];
        fetch('api/session').then(function (r) { return r.json(); }).then(function (s) {
          return fetch('api/keys/' + id + '/regenerate', {method: 'POST',
            headers: {'X-CSRF-Token': s.csrf_token}});
        }).then(function (r) { done(r.status); }, function () { done(-1); });""", key_id)
    check(status == 404, "another user's key id is 404 (got %s)" % status)

    # ---- readable at 360 px, keyboard only ----
    driver.set_window_size(360, 800)
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
    check(overflow <= 0, "the page scrolls sideways at 360 px (%d px)" % overflow)
    el("empty-create").send_keys(Keys.ENTER)
    until(lambda: visible("create-dialog"), "the create dialog from the keyboard")
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    until(lambda: not visible("create-dialog"), "Escape to close the dialog")


if __name__ == "__main__":
    main()
