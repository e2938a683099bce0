"""What every request body shares: strict types, no unknown fields, no NUL in text.

API.md: "Types are strict: ``true`` is not a number, ``"2"`` is not an integer, and text
fields refuse NUL characters (422)". Request models derive from :class:`StrictModel` and
type their text fields :data:`Text` (path, query and form parameters take
``pattern=NUL_FREE``); money comes in as :data:`DecimalText`, a decimal
*string* (``"19.99"``), because strict mode refuses a string for a ``Decimal`` and a JSON
number would pass through a float. Query parameters are not models: FastAPI still parses
them from their strings.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

#: A decimal string as API.md writes money: digits, then at most two decimal places.
DECIMAL_TEXT: Final = re.compile(r"[0-9]{1,13}(?:\.[0-9]{1,2})?")


class StrictModel(BaseModel):
    """The base of every request body: unknown fields are refused (so a client cannot set
    ``roles``, ``id`` or ``is_admin``), and no value is coerced (``true`` is not ``1``,
    ``"30"`` is not ``30``)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def refuse_nul(text: str) -> str:
    """PostgreSQL text cannot hold NUL: refuse it here (422) rather than fail there (500)."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


#: Text a request may carry: any string without NUL characters.
Text = Annotated[str, AfterValidator(refuse_nul)]
#: The same rule for a path, query or form parameter (``Path(pattern=NUL_FREE)``).
NUL_FREE: Final = r"^[^\x00]*$"


def parse_decimal_text(value: Any) -> Decimal:
    """A decimal string (``"19.99"``) as a ``Decimal``; Python callers may pass a ``Decimal``.
    Refused: JSON numbers (they would pass through a float), booleans, ``"1_000"``,
    ``"1e3"``, ``"NaN"``, signs, spaces, an empty string, more than two places."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str) and DECIMAL_TEXT.fullmatch(value):
        return Decimal(value)
    raise ValueError('must be a decimal string with at most two places, such as "19.99"')


#: Money in a request body, e.g. ``"19.99"``. The JSON schema says what the API takes.
DecimalText = Annotated[
    Decimal,
    BeforeValidator(parse_decimal_text),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": f"^{DECIMAL_TEXT.pattern}$",
            "examples": ["19.99"],
            "description": "A decimal string with at most two places.",
        }
    ),
]
