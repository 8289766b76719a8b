"""A real headless Chromium driven by Selenium (installed by scripts/ensure_browser.sh), and a
local HTTP server, for the report's browser tests."""

import functools
import http.server
import shutil
import threading

import pytest

# Bokeh draws into canvases inside shadow roots: walk them all
CANVAS_INK_JS = """
function walk(root, out) {
  root.querySelectorAll('*').forEach(function (e) {
    if (e.tagName === 'CANVAS') { out.push(e); }
    if (e.shadowRoot) { walk(e.shadowRoot, out); }
  });
  return out;
}
return walk(document, []).map(function (c) {
  if (!c.width || !c.height) { return 0; }
  var d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data, n = 0;
  for (var i = 0; i < d.length; i += 4) {
    if (d[i + 3] > 0 && (d[i] < 200 || d[i + 1] < 200 || d[i + 2] < 200)) { n++; }
  }
  return n;
});
"""


def _find(*names):
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """A headless Chromium WebDriver with its console log kept (skips only where Chromium or
    its driver is not installed: scripts/test.sh installs them)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _find("chromium", "chromium-browser"), _find("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("Chromium/chromedriver not installed (scripts/ensure_browser.sh installs Debian's)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-dev-shm-usage", "--window-size=1200,1500",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def console_errors(driver):
    """The browser console's SEVERE entries since the last call."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_root():
    """Start a local HTTP server for a directory: call it with the directory, get the base URL."""
    servers = []

    def serve(directory):
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()
