"""The whole system as a user runs it: `mercato up` in a subprocess, on free ports.

``mercato_up`` is shared by every e2e test of the session (embedded defaults: SQLite files
in a temporary DATA_DIR, memory cache and broker). Tests talk to it through the gateway only.

``MERCATO_E2E_TOPOLOGY=servers`` runs every `mercato up` of the tier (this one and the
modules' own) as the servers topology instead: nginx in front of two gateway instances,
each service under gunicorn, the worker, on PostgreSQL, Redis and RabbitMQ
(support.deploy_topology; tests/deploy/test_topology.py runs the tier that way).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.processes import RunningMercato, free_ports, mercato_up

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def mercato(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMercato]:
    """`mercato up` on embedded defaults, shared by the session's e2e tests."""
    with mercato_up(tmp_path_factory.mktemp("mercato-up"), free_ports()) as running:
        yield running


@pytest.fixture(scope="session")
def gateway_url(mercato: RunningMercato) -> str:
    return mercato.base_url
