"""Task functions and page readers for tests/test_dashboard.py (module level: every start
method imports them)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from helpers import TIMEOUT, wait_for_fifo


def pass_or_wait(path: str | None) -> str:
    """Return at once for None; else block until the FIFO at ``path`` is written."""
    return "free" if path is None else wait_for_fifo(path)


def fetch(url: str) -> tuple[int, bytes]:
    """GET ``url``: its status and body (errors included)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def state(dashboard_url: str) -> dict[str, Any]:
    """The board's JSON, as the page fetches it."""
    status, body = fetch(dashboard_url.replace("/?token=", "/api/state?token="))
    assert status == 200, status
    result: dict[str, Any] = json.loads(body)
    return result


def wait_for(page: Any, selector: str) -> Any:
    """The first element matching ``selector`` once the page shows it (bounded wait)."""
    return page.wait_for_selector(selector, timeout=TIMEOUT * 1000)
