"""Render a run's summary.html in headless Chromium, as a person would see it, offline.

    .venv/bin/python bench/summary_render.py [RUN]     # default: reports/out/latest

Installs Debian's chromium when it is missing. Writes summary.png next to the
page and prints its size, the render time, and whether the page asked the
network for anything (it must not: the page is self-contained).
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reports.run import resolve_run  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    print("installing Debian's chromium (once)", flush=True)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=True,
                   env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return shutil.which("chromium") or sys.exit("chromium is still missing after apt-get install")


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    if header[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{path} is not a PNG")
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="latest")
    args = parser.parse_args()
    run_dir = resolve_run(args.run, ROOT / "reports" / "out")
    page = run_dir / "summary.html"
    shot = run_dir / "summary.png"
    browser = chromium()
    started = time.monotonic()
    result = subprocess.run([browser, *FLAGS, "--window-size=1200,2400", f"--screenshot={shot}",
                             "--enable-logging=stderr", "--v=0", page.as_uri()],
                            capture_output=True, text=True, timeout=120, check=False)
    elapsed = time.monotonic() - started
    if not shot.exists():
        print(result.stderr[-2000:])
        return 1
    fetched = [line for line in result.stderr.splitlines() if "http://" in line or "https://" in line]
    width, height = png_size(shot)
    print(f"rendered {page} in {elapsed:.1f} s: {shot} {width}x{height}, {shot.stat().st_size // 1024} KiB; "
          f"network requests seen: {len(fetched)}")
    return 0 if not fetched else 1


if __name__ == "__main__":
    sys.exit(main())
