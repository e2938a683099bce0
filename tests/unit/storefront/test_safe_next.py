"""Where the storefront sends a browser after signing in: a local path, or the catalogue."""

from __future__ import annotations

import pytest

from mercato.storefront.web import safe_next


@pytest.mark.parametrize("target", ["/", "/orders", "/products/42?page=2", "/search?q=a+b%20c"])
def test_a_local_path_is_kept(target: str) -> None:
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "/x/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\n/evil.example",
        "/ /evil.example",
        "/\x00",
        "javascript:alert(1)",
        "",
        None,
        42,
    ],
)
def test_anything_a_browser_could_read_as_another_site_is_the_catalogue(target: object) -> None:
    assert safe_next(target) == "/"
