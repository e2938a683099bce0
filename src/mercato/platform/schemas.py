"""What every request body shares: strict types, no unknown fields, no NUL in text.

API.md: "Types are strict: ``true`` is not a number, ``"2"`` is not an integer, and text
fields refuse NUL characters (422)". Request models derive from :class:`StrictModel` and
type their text fields :data:`Text` (path, query and form parameters take
``pattern=NUL_FREE``) and mark their integers :data:`Integral`; money comes in as
:class:`DecimalText`, a decimal *string* (``"19.99"``), because strict mode refuses a string
for a ``Decimal`` and a JSON number would pass through a float. Query parameters are not
models: FastAPI still parses them from their strings. Each constraint is one the JSON schema
carries, so that a request valid by the schema is taken and one invalid by it refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema


class StrictModel(BaseModel):
    """The base of every request body: unknown fields are refused (so a client cannot set
    ``roles``, ``id`` or ``is_admin``), and no value is coerced (``true`` is not ``1``,
    ``"30"`` is not ``30``)."""

    model_config = ConfigDict(extra="forbid", strict=True)


#: The largest ``?offset=`` of a list: past it a page is a scan, not paging, and a larger
#: number would overflow the database's integers (a 500, not a 422).
MAX_OFFSET: Final = 1_000_000
#: PostgreSQL text cannot hold NUL: refuse it here (422) rather than fail there (500). The
#: rule of :data:`Text`, and of a path, query or form parameter (``Path(pattern=NUL_FREE)``).
NUL_FREE: Final = r"^[^\x00]*$"
#: Text a request may carry: any string without NUL characters.
Text = Annotated[str, StringConstraints(pattern=NUL_FREE)]
#: The rule of :data:`Trimmed`: no NUL, and no space, tab or line break at either end.
TRIMMED: Final = r"^[^\x00\t\n\v\f\r ](?:[^\x00]*[^\x00\t\n\v\f\r ])?$"
#: Text that does not start or end with white space (a name, a SKU), nor hold NUL: refused
#: rather than stripped, so that its length is the one the schema counts.
Trimmed = Annotated[str, StringConstraints(pattern=TRIMMED)]


def integral(value: Any) -> Any:
    """A JSON number with no fraction (``3.0``) as the integer it is: JSON Schema's
    ``integer`` takes it, so the API does too. Anything else is left to strict validation
    (``true`` and ``"3"`` stay refused)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: Marks an integer of a request body, after its bounds so that the schema keeps them:
#: ``Annotated[int, Field(ge=0, le=150), Integral]`` takes ``3`` or ``3.0``, never ``true``
#: or ``"3"``.
Integral: Final = BeforeValidator(integral)


@dataclass(frozen=True, slots=True)
class DecimalText:
    """``Annotated[Decimal, DecimalText(pattern, description)]``: a decimal *string* in a
    request body (``"19.99"``), taken when it matches ``pattern`` (a regular expression over
    the whole text) and refused otherwise: JSON numbers (they would pass through a float),
    booleans, ``"1_000"``, ``"1e3"``, ``"NaN"``, signs, spaces, an empty string. The JSON
    schema is that string with that ``pattern``, so it says exactly what the API takes."""

    pattern: str
    description: str

    def parse(self, value: Any) -> Decimal:
        if isinstance(value, Decimal):  # Python callers may pass one
            return value
        if isinstance(value, str) and re.fullmatch(self.pattern, value):
            return Decimal(value)
        raise ValueError(f"must be {self.description}")

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self.parse, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "pattern": f"^(?:{self.pattern})$",
            "examples": ["19.99"],
            "description": f"{self.description[0].upper()}{self.description[1:]}.",
        }
