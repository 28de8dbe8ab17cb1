"""The audit's HTML page as its reader gets it: rendered by headless Chromium.

The page is written for a privacy officer: the verdicts must be the first thing on it and
every image (the leakage plot, each attack's grid of originals and reconstructions) must
load. A string search of the HTML cannot show either, so a browser renders the page and a
small probe script, added to a copy of it, records what the rendered page holds in
``data-`` attributes of ``<body>``, read back from Chromium's DOM dump.

``.ci/run`` installs Debian's ``chromium``; elsewhere the test skips when
``/usr/bin/chromium`` is missing, unless the ``CI`` environment variable is set (then it
fails: CI must run it).
"""

from __future__ import annotations

import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torch

import shieldsplit as ss
from shieldsplit.audit import auditor
from shieldsplit.audit.auditor import audit
from shieldsplit.data import load_dataset

CHROMIUM = Path("/usr/bin/chromium")

#: Records, once the page has loaded, how many images loaded (complete, with pixels), the
#: first section of the page and whether the verdicts sit above every other section and
#: inside the first screen.
PROBE = """<script>
addEventListener("load", () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const sections = [...document.querySelectorAll("main > section")];
  const top = s => s.getBoundingClientRect().top;
  const verdicts = document.getElementById("verdicts");
  const b = document.body.dataset;
  b.images = `${ok}/${imgs.length}`;
  b.firstSection = sections.length ? sections[0].id : "";
  b.verdictsFirst = String(!!verdicts && sections.every(s => s === verdicts
                                                       || top(verdicts) < top(s)));
  b.verdictsOnFirstScreen = String(!!verdicts && top(verdicts) < innerHeight);
  b.cards = String(document.querySelectorAll("#verdicts .verdict").length);
});
</script>"""


def chromium() -> Path:
    """Debian's Chromium, or a skip (outside CI) or a failure (in CI)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run installs Debian's chromium "
                    "package before the tests (apt-get install chromium)")
    pytest.skip(f"needs {CHROMIUM} (Debian's chromium package; .ci/run installs it, and CI "
                "fails without it)")


def render(page: Path, profile: Path) -> str:
    """Chromium's DOM of ``page`` after its load event (at most 5 s of virtual time)."""
    done = subprocess.run(
        [str(chromium()), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,900",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Tags(HTMLParser):
    """The attributes of ``<body>`` and of every ``<img>`` in a document."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.body = dict(attrs)
        elif tag == "img":
            self.images.append(dict(attrs))


def parse(text: str) -> Tags:
    tags = Tags()
    tags.feed(text)
    return tags


def test_the_rendered_report_opens_with_its_verdicts_and_every_image_loads(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    chromium()  # skip before the audit's cost where there is no browser
    monkeypatch.setitem(auditor.REFERENCE_EPOCHS, "quick", 1)
    ds = load_dataset("digits", seed=0, limit=120)
    torch.manual_seed(0)
    net = ss.PGSLNet(num_classes=10, image_size=8, width=8, hidden=16)
    report = audit(net, data=(ds.x_train, ds.y_train), cut=2, seed=0, victims=8,
                   budget="quick", attacks=["split-black-box"], progress=False,
                   attack_options={"split-black-box": {"epochs": 1}})
    assert report.verdicts and report._images, report.summary()
    page = tmp_path / "audit.html"
    report.save_html(page, include_images=True)
    text = page.read_text()
    written = parse(text)
    grids = [i for i in written.images if i.get("class") == "grid"]
    assert len(grids) == len(report._images) >= 1
    assert len(written.images) == len(grids) + 1  # and the leakage plot

    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", PROBE + "</body>"))
    dom = parse(render(probed, tmp_path / "profile"))
    body = dom.body
    assert body.get("data-images") == f"{len(written.images)}/{len(written.images)}", body
    assert body.get("data-first-section") == "verdicts", body
    assert body.get("data-verdicts-first") == "true", body
    assert body.get("data-verdicts-on-first-screen") == "true", body
    assert body.get("data-cards") == str(len(report.verdicts)), body


def test_a_broken_image_is_caught(tmp_path: Any) -> None:
    """The probe can fail: a page whose image has no pixels reports it."""
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><html><body><main><section id="other"></section>'
                    '<section id="verdicts"></section></main>'
                    '<img src="data:image/png;base64,AAAA">' + PROBE + "</body></html>")
    body = parse(render(page, tmp_path / "profile")).body
    assert body.get("data-images") == "0/1", body
    assert body.get("data-first-section") == "other", body
    assert body.get("data-verdicts-first") == "false", body
