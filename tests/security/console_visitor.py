"""A browser's console session over plain HTTP, as the security tests drive it: its cookies,
and the posts its own pages make (the form token, and the headers a browser adds to a form post
from the console's own page)."""

from __future__ import annotations

import re
from typing import Any

import httpx2 as httpx

__all__ = ["ConsoleVisitor", "cross_site", "same_site_other_port"]

_TOKEN = re.compile(r'name="csrf" value="([^"]+)"')


def cross_site() -> dict[str, str]:
    """What a browser sends with a form posted from a page on another site."""
    return {"Origin": "https://attacker.example", "Sec-Fetch-Site": "cross-site"}


def same_site_other_port(port: int) -> dict[str, str]:
    """From a page on another port of the same host: same-site, so SameSite cookies go along."""
    return {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-site"}


class ConsoleVisitor:
    def __init__(self, base_url: str) -> None:
        self.origin = base_url
        self.http = httpx.Client(base_url=base_url, timeout=30, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def own_page(self) -> dict[str, str]:
        return {"Origin": self.origin, "Sec-Fetch-Site": "same-origin"}

    def token(self) -> str:
        """The form token the console's pages carry ("" where they carry none: a console
        without the check still gets its posts, and each test fails on what it checks)."""
        found = _TOKEN.search(self.http.get("/console/login").text)
        return found[1] if found else ""

    def post(
        self,
        path: str,
        data: dict[str, str] | None = None,
        *,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """A post from the console's own page, unless ``headers`` say where it came from."""
        form = {"csrf": self.token(), **(data or {})}
        return self.http.post(path, data=form, headers=headers or self.own_page(), **kwargs)

    def log_in(self, secret: str) -> httpx.Response:
        answer = self.post("/console/login", {"key": secret})
        assert answer.status_code == 303, answer.text
        return answer
