"""The checks every page of the browser tests goes through find what they look for."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from support.browser import usability_problems, watch

pytestmark = pytest.mark.browser

GOOD = """<!doctype html><meta name="viewport" content="width=device-width">
<h1>Shop</h1><h2>Lamps</h2><h3>Desk lamp</h3><h2>Cups</h2>
<form><label for="q">Search</label><input id="q"><input type="hidden" name="t">
<label>Note <textarea></textarea></label><button>Go</button><input type="submit"></form>"""


def test_a_page_without_problems_has_none(blank: Page) -> None:
    blank.set_content(GOOD)

    assert usability_problems(blank) == []


@pytest.mark.parametrize(
    ("html", "problem"),
    [
        ('<h1>Shop</h1><div style="width: 600px">wide</div>', "in a 375px window"),
        ('<h1>Shop</h1><input name="q" placeholder="Search">', "a field without a label"),
        ("<h1>Shop</h1><select><option>1</option></select>", "a field without a label"),
        ("<h1>Shop</h1><h1>Again</h1>", "2 h1 headings"),
        ("<h2>Lamps</h2>", "0 h1 headings"),
        ("<h1>Shop</h1><h3>Desk lamp</h3>", 'h3 "Desk lamp" comes after h1'),
    ],
)
def test_each_problem_is_found(blank: Page, html: str, problem: str) -> None:
    blank.set_content(f'<!doctype html><meta name="viewport" content="width=device-width">{html}')

    assert any(problem in found for found in usability_problems(blank))


@pytest.mark.parametrize(
    ("html", "trouble"),
    [
        (
            "<meta http-equiv='Content-Security-Policy' content=\"script-src 'self'\">"
            "<script>document.title = 'ran'</script>",
            "Content Security Policy",
        ),
        ("<img src=x onerror=\"alert('markup ran')\">", "a alert dialog: markup ran"),
        ("<script>undefinedFunction()</script>", "undefinedFunction is not defined"),
    ],
)
def test_what_goes_wrong_in_a_page_is_seen(blank: Page, html: str, trouble: str) -> None:
    seen = watch(blank)

    blank.set_content(html)

    for _ in range(100):  # console messages and dialogs arrive as events: wait for one
        if seen.troubles:
            break
        blank.wait_for_timeout(50)
    assert any(trouble in found for found in seen.troubles), seen.troubles


def test_a_quiet_page_has_no_troubles(blank: Page) -> None:
    seen = watch(blank)

    blank.set_content(GOOD)

    assert seen.troubles == []


def test_a_question_is_answered_yes_and_kept(blank: Page) -> None:
    seen = watch(blank)
    blank.set_content("<p>?</p>")

    answer = blank.evaluate("() => window.confirm('Delete it?')")

    assert answer is True
    assert seen.asked == ["Delete it?"]
    assert seen.troubles == []
