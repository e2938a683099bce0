"""The administrators' catalogue pages: ``/admin/products`` and its new, edit and delete
forms, each a call to the products API as the signed-in administrator.

The forms carry the API's field names. Form values are text; the API's types are strict,
so ``stock`` is turned into an integer here (a non-number is the field's error, and the API
is not called) and ``price`` is sent as the decimal text it is. The edit form sends only
the fields the administrator changed, judged against the values it was shown (kept in
``shown_<field>`` inputs): an unchanged ``stock`` is never written back over the
reservations orders made meanwhile.
"""

from __future__ import annotations

import re
from typing import Any, Final

from fastapi import APIRouter
from starlette.datastructures import FormData
from starlette.responses import Response

from mercato.storefront.api import ApiAnswer
from mercato.storefront.catalogue import listed_products
from mercato.storefront.web import (
    AdminVisit,
    CheckedForm,
    PageError,
    Pager,
    Visit,
    redirect,
    render,
    text,
)

router = APIRouter(prefix="/admin/products")

#: The form's fields, in the API's names and the form's order; ``sku`` only when creating.
FIELDS: Final = ("sku", "name", "price", "stock", "category", "currency", "description")
EDITABLE: Final = FIELDS[1:]
#: Fields the API fills in when a new product's form leaves them empty.
DEFAULTED: Final = frozenset({"stock", "category", "currency"})
_WHOLE_NUMBER: Final = re.compile(r"-?[0-9]{1,12}")
_INVALID: Final = "Fix the fields marked below."


@router.get("")
async def products(visit: AdminVisit, page: str | None = None, q: str | None = None) -> Response:
    pager = Pager.of(page, visit.storefront.page_size)
    # The API's own order (newest first); a search text it refuses matches nothing.
    items, pager = await listed_products(visit, pager, sort=None, **({"q": q} if q else {}))
    return await render(
        visit,
        "admin/products.html",
        # not "q": base.html would fill the site's search box with it
        {"products": items, "pager": pager, "search": q or ""},
    )


@router.get("/new")
async def new_product(visit: AdminVisit) -> Response:
    return await _form(visit, {"stock": "0", "currency": "USD"})


@router.post("")
async def create_product(form: CheckedForm, visit: AdminVisit) -> Response:
    values = _values(form, FIELDS)
    body, errors = api_body(values, [n for n in FIELDS if values[n] or n not in DEFAULTED])
    if errors:
        return await _form(visit, values, errors=errors, status=422)
    answer = await visit.call("POST", "/products", json_body=body)
    if answer.status == 409:
        return await _form(visit, values, errors={"sku": answer.detail}, status=409)
    if answer.status == 422:
        return await _form(visit, values, errors=answer.field_errors(), status=422)
    if not answer.ok:
        raise _refused(answer)
    visit.flash(f"Added {answer.body['name']} ({answer.body['sku']}).")
    return await redirect(visit, "/admin/products")


@router.get("/{product_id}/edit")
async def edit_product(visit: AdminVisit, product_id: str) -> Response:
    answer = await visit.call("GET", _api_path(product_id))
    if not answer.ok:
        raise _refused(answer)
    shown = {name: _as_text(answer.body[name]) for name in EDITABLE}
    return await _form(visit, shown, product=answer.body, shown=shown)


@router.post("/{product_id}")
async def update_product(form: CheckedForm, visit: AdminVisit, product_id: str) -> Response:
    path = _api_path(product_id)
    values = _values(form, EDITABLE)
    shown = _values(form, EDITABLE, prefix="shown_")
    body, errors = api_body(values, [name for name in EDITABLE if values[name] != shown[name]])
    if not errors:
        if not body:
            visit.flash("Nothing was changed.")
            return await redirect(visit, "/admin/products")
        answer = await visit.call("PATCH", path, json_body=body)
        if answer.ok:
            visit.flash(f"Saved {answer.body['name']} ({answer.body['sku']}).")
            return await redirect(visit, "/admin/products")
        if answer.status != 422:
            raise _refused(answer)
        errors = answer.field_errors()
    current = await visit.call("GET", path)  # its sku and name, for the page's heading
    if not current.ok:
        raise _refused(current)
    return await _form(visit, values, errors=errors, product=current.body, shown=shown, status=422)


@router.post("/{product_id}/delete")
async def delete_product(_form: CheckedForm, visit: AdminVisit, product_id: str) -> Response:
    answer = await visit.call("DELETE", _api_path(product_id))
    if answer.status == 404:  # a second click, or another administrator was quicker
        visit.flash("That product had already been deleted.")
    elif not answer.ok:
        raise _refused(answer)
    else:
        visit.flash("The product was deleted.")
    return await redirect(visit, "/admin/products")


def _values(form: FormData, names: tuple[str, ...], prefix: str = "") -> dict[str, str]:
    """The posted text of the fields ``names`` (a browser sends line breaks as CRLF)."""
    return {name: text(form, prefix + name).replace("\r\n", "\n") for name in names}


def api_body(values: dict[str, str], names: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The API body of the fields ``names``, and the errors found before the API sees it."""
    body: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in names:
        value = values[name] if name == "description" else values[name].strip()
        if name == "stock":
            if not _WHOLE_NUMBER.fullmatch(value):
                errors["stock"] = "Enter a whole number, 0 or more."
                continue
            body["stock"] = int(value)
        else:
            body[name] = value
    return body, errors


async def _form(
    visit: Visit,
    values: dict[str, str],
    *,
    errors: dict[str, str] | None = None,
    product: dict[str, Any] | None = None,
    shown: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    """The new-product form, or the edit form of ``product`` (``shown``: the values the
    administrator was first shown, against which a change is judged)."""
    errors = errors or {}
    outside = [message for name, message in errors.items() if name not in FIELDS]
    return await render(
        visit,
        "admin/product_form.html",
        {
            "product": product,
            "values": values,
            "shown": shown or {},
            "errors": errors,
            "alert": " ".join(outside) or (_INVALID if errors else ""),
        },
        status=status,
    )


def _api_path(product_id: str) -> str:
    """The API path of one product; a dot segment would name another path, and no id
    holds a control character (404 for both)."""
    if product_id in {".", ".."} or not product_id.isprintable():
        raise _not_found()
    return f"/products/{product_id}"


def _as_text(value: object) -> str:
    return "" if value is None else str(value)


def _not_found() -> PageError:
    return PageError(404, "Product not found", "It does not exist, or it was just deleted.")


def _refused(answer: ApiAnswer) -> PageError:
    """The page for an API answer the form cannot show next to a field."""
    if answer.status == 404:
        return _not_found()
    if answer.status in (401, 403):
        return PageError(403, "Forbidden", "This page is for administrators.")
    status = answer.status if 400 <= answer.status < 500 else 502
    return PageError(status, "Not done", answer.detail or "The products service refused this.")
