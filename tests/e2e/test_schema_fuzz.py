"""Schema fuzzing, fast profile: every operation of the gateway's schema and of each
service's, with generated valid and invalid requests, holds to its schema under every check
of schemathesis (no 5xx, documented statuses, content types and headers, bodies that match,
valid requests taken and invalid ones refused, ``Allow`` listing the path's methods); then
a few stateful runs that chain operations through the schema's links.

`make security` runs the thorough profile (support.fuzzing); both read schemathesis.toml.
A private `mercato up` is fuzzed: the session's shared one must not see the products and
users the fuzzer makes (and deletes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.schemas import OpenApiSchema

from support.deploy_topology import topology_requested
from support.fuzzing import CONFIG, TARGETS, admin_token, fuzzable, schema_url
from support.processes import RunningMercato

pytestmark = [
    pytest.mark.e2e,
    # Behind nginx its flood guard (50 requests a second per address on /api/) answers 429
    # to the fuzzer's bursts: the schemas are the services', fuzzed on `mercato up`.
    pytest.mark.skipif(
        topology_requested(), reason="nginx's per-address flood guard refuses fuzzing bursts"
    ),
]

#: Examples per operation and mode, and stateful runs: a quick pass for `make test` (about a
#: minute); `make security` generates a hundred per operation and phase.
FAST_EXAMPLES = 10
FAST_RUNS = 5
#: The schemas with links between operations (auth and users have none: nothing they answer
#: names another operation's input).
STATEFUL_TARGETS = ("gateway", "products", "orders")
FAST = settings(
    max_examples=FAST_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases every run: a failure here reproduces
)


def load(running: RunningMercato, target: str) -> OpenApiSchema:
    config = SchemathesisConfig.from_path(CONFIG)
    return schemathesis.openapi.from_url(schema_url(running, target), config=config)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMercato]:
    with fuzzable(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


@pytest.fixture(scope="module")
def bearer(fuzzed: RunningMercato) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(fuzzed)}"}


@pytest.mark.parametrize("mode", list(GenerationMode))
@pytest.mark.parametrize("target", TARGETS)
def test_every_operation_holds_to_its_schema(
    target: str, mode: GenerationMode, fuzzed: RunningMercato, bearer: dict[str, str]
) -> None:
    operations = [result.ok() for result in load(fuzzed, target).get_all_operations()]
    fuzzed_ones = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @FAST
        def holds(case: Any) -> None:
            case.call_and_validate(headers=bearer)

        try:
            holds()
        except Unsatisfiable:
            # Nothing to make invalid (no parameter, no body): no negative case exists.
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        fuzzed_ones.append(operation.label)
    assert len(fuzzed_ones) >= len(operations) // 2, (operations, fuzzed_ones)


@pytest.mark.parametrize("target", STATEFUL_TARGETS)
def test_chained_operations_hold_to_the_schema(
    target: str, fuzzed: RunningMercato, bearer: dict[str, str]
) -> None:
    loaded = load(fuzzed, target)

    class Chained(loaded.as_state_machine()):
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": bearer}

    Chained.run(
        settings=settings(
            max_examples=FAST_RUNS,
            stateful_step_count=5,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
    )
