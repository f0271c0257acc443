"""report.html in a real browser: headless Chromium loads the page written from the golden cells.

The unit tests parse the HTML; this proves a browser draws it: the DOM
Chromium builds has the grid with the right cells, and its screenshot is a
PNG of the window's size that shows the fail colour (decoded here with zlib,
no imaging library). Marked `host`: it needs no guest, only Chromium (`make
setup` installs it); without Chromium it skips and says so. The screenshot
stays in the test's tmp dir (pytest keeps the last three runs' dirs).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lab.results import html, store
from lab.results.html import Outcome
from tests.unit._results_data import KTAP, cells

pytestmark = pytest.mark.host

CHROMIUM = shutil.which("chromium")
WIDTH, HEIGHT = 1400, 1000
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--force-color-profile=srgb",  # colours as written in the CSS, not converted to a display profile
)  # fmt: skip


def chromium(tmp_path: Path, page: Path, *extra: str) -> str:
    """Run Chromium once on the page with a fresh profile; its stdout (the DOM, for --dump-dom)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    argv = [CHROMIUM or "chromium", *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Grid(HTMLParser):
    """The grid table of a DOM: suite headers, and each row's cell id with its squares' classes."""

    def __init__(self) -> None:
        super().__init__()
        self.suites: list[str] = []
        self.rows: list[tuple[str, list[str]]] = []
        self._inside = False
        self._header = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id") == "grid":
            self._inside = True
        elif self._inside and tag == "tr" and a.get("data-cell"):
            self.rows.append((a["data-cell"] or "", []))
        elif self._inside and tag == "td" and a.get("data-suite"):
            self.rows[-1][1].append(a.get("class") or "")
        self._header = self._inside and tag == "th" and a.get("class") == "suite"

    def handle_endtag(self, tag: str) -> None:
        self._inside = self._inside and tag != "table"
        self._header = False

    def handle_data(self, data: str) -> None:
        if self._header:
            self.suites.append(data)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered rows of an 8-bit RGB or RGBA PNG (PNG spec, section 9: filters)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, bpp = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw, stride, rows = zlib.decompress(idat), width * bpp, []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + b) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line) if bpp == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3))
        prev = line
    return width, height, rows


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (make setup installs it; or: apt-get install chromium)")
    out = tmp_path_factory.mktemp("report")
    (out / "console-x86_64.6.12.default.log").write_text((KTAP / "console-splat.log").read_text())
    (out / "console-arm64.6.12.default.log").write_text((KTAP / "console-panic.log").read_text())
    html.write(out / "report.html", cells(), store.RunMeta(argv=("klab", "test")), out)
    return out / "report.html"


def test_chromium_builds_the_grid_from_the_page(page: Path) -> None:
    grid = Grid()
    grid.feed(chromium(page.parent, page, "--dump-dom"))
    assert grid.suites == ["fsdemo", "ptracedemo"]
    assert grid.rows == [
        ("x86_64.6.12.default", ["o-fail", "o-fail"]),
        ("arm64.6.12.default", ["o-fail", "o-fail"]),
        ("x86_64.6.1.default", ["o-lab-error", "o-lab-error"]),
    ]


def test_chromium_screenshot_shows_the_fail_colour(page: Path) -> None:
    shot = page.with_name("report.png")
    chromium(page.parent, page, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (WIDTH, HEIGHT)
    width, height, rows = png_pixels(data)
    assert (width, height, len(rows)) == (WIDTH, HEIGHT, HEIGHT)
    pixels = Counter(row[x : x + 3] for row in rows for x in range(0, len(row), 3))
    assert pixels.most_common(1)[0][0] == b"\xff\xff\xff"  # the page's white: the rows decoded right
    for outcome in (Outcome.FAIL, Outcome.LAB_ERROR):
        colour = bytes.fromhex(html.COLOURS[outcome].lstrip("#"))
        assert pixels[colour] > 2000, f"{outcome.value} colour {colour.hex()} on {pixels[colour]} pixels only"
