"""A real browser for the tests: Debian's Chromium, headless, driven by Playwright.

``browser_page()`` opens a fresh headless Chromium (installed with ``apt-get``
the first time, as CI installs it) and yields a Playwright ``Page``; on exit the
browser and Playwright's driver process end, so the leak fixture sees nothing
left behind.  Playwright is only the remote control: it starts the system's
``/usr/bin/chromium`` (``executable_path``), never a browser of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Flags the workplace's machines need: no sandbox as root, no GPU, no calls home.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
)
#: Seconds allowed to install Chromium on a fresh machine.
INSTALL_TIMEOUT = 900


def chromium_path() -> str:
    """The system Chromium, installed with apt-get (as root, as in CI) when missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(
            "the browser tests need Debian's chromium: install it with "
            "`apt-get install -y chromium` (as root), then run the tests again"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        subprocess.run(command, check=True, env=env, timeout=INSTALL_TIMEOUT, capture_output=True)
    found = shutil.which("chromium")
    if not found:
        raise RuntimeError("apt-get installed chromium, yet no `chromium` is on PATH")
    return found


@contextmanager
def browser_page(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A Playwright page in a fresh headless Chromium with its own profile directory."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with (
        tempfile.TemporaryDirectory(prefix="workcrew-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=[flag for flag in FLAGS if flag != "--headless"],
            viewport={"width": width, "height": height},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            context.close()
