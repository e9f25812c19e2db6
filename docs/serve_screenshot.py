"""Take the README's screenshot of steerable-serve: the page side by side, A at the run's defaults, B at
verbosity 4 / positivity 0. Needs Playwright (dev extras) and Debian's chromium.

    steerable-serve run=outputs/quickstart/<timestamp> port=7861 &
    python docs/serve_screenshot.py http://127.0.0.1:7861 docs/serve.png
"""

from __future__ import annotations

import sys

from playwright.sync_api import sync_playwright

SETTING_B = {"attributes.verbosity": 4, "attributes.positivity": 0}
SET_SLIDER = "([id, v]) => { const e = document.getElementById(id); e.value = v; e.dispatchEvent(new Event('input')); }"
DONE = "document.getElementById('out-B').textContent.length > 20 && !document.getElementById('status').textContent"


def main(url: str, out: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1180, "height": 900})
        page.goto(url)
        page.wait_for_selector("#controls-A input")
        page.check("#compare")
        page.fill("#max_new_tokens", "96")
        for name, value in SETTING_B.items():
            page.evaluate(SET_SLIDER, [f"ctl-B-{name}", str(value)])
        page.click("#ask")
        page.wait_for_function(DONE, timeout=120_000)
        page.screenshot(path=out)
        print(page.inner_text("#out-A"), "\n---\n", page.inner_text("#out-B"))
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
