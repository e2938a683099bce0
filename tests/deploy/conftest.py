"""Fixtures of the deployment tests: Debian's nginx, and the servers topology (nginx, two
gateway instances, every service under gunicorn, the worker) started once per module.

A module sets ``TOPOLOGY_ENV`` (a dict of settings) to start its topology with them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.deploy_topology import RunningTopology, nginx_binary, servers_topology


@pytest.fixture(scope="session")
def nginx() -> str:
    """The nginx binary; skips (fails under CI) without one."""
    return nginx_binary()


@pytest.fixture(scope="module")
def topology(
    request: pytest.FixtureRequest, nginx: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningTopology]:
    """The servers topology for the module, on a fresh database, Redis database and
    exchange, with the module's ``TOPOLOGY_ENV``."""
    env = getattr(request.module, "TOPOLOGY_ENV", {})
    with servers_topology(tmp_path_factory.mktemp("topology"), env) as running:
        yield running
