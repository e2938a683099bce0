"""The storefront's stylesheet on its own, for layouts no page shows at a given moment."""

from __future__ import annotations

from importlib.resources import files

import pytest
from playwright.sync_api import Page

from support.browser import usability_problems

pytestmark = pytest.mark.browser

STYLESHEET = str(files("mercato.storefront") / "static" / "style.css")


def test_a_wide_table_scrolls_in_its_box_hidden_text_and_all(blank: Page) -> None:
    cells = "".join(f"<td>Column {n} with some text</td>" for n in range(8))
    blank.set_content(
        '<!doctype html><meta name="viewport" content="width=device-width"><main><h1>Wide</h1>'
        f'<div class="table-wrap"><table><tr>{cells}<td><button>Delete'
        '<span class="visually-hidden"> a product with a long name</span></button></td>'
        "</tr></table></div></main>"
    )
    blank.add_style_tag(path=STYLESHEET)

    assert blank.evaluate("document.querySelector('table').scrollWidth") > 375
    assert usability_problems(blank) == []
