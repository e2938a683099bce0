"""`mercato up` trusts its own gateway, and only it, to name the client: login limits stay
per client behind the gateway."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from support.processes import RunningMercato, mercato_up
from support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

PROXY = "127.0.0.2"  # Linux answers the whole of 127.0.0.0/8 on the loopback interface


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMercato]:
    ports: set[int] = set()
    while len(ports) < 5:
        ports.add(free_port())
    names = ["gateway", "auth", "users", "products", "orders"]
    # The test plays a proxy in front of the gateway (from 127.0.0.2, which is not the
    # gateway's own address), so that it can speak for two clients.
    env = {"TRUSTED_PROXIES": f"{PROXY}/32", "RATE_LIMIT_LOGIN_ADDRESS": "3/minute"}
    with mercato_up(
        tmp_path_factory.mktemp("client-address-e2e"),
        dict(zip(names, sorted(ports), strict=True)),
        env=env,
    ) as running:
        yield running


async def test_behind_the_gateway_each_client_has_its_own_login_limit(
    shop: RunningMercato,
) -> None:
    transport = httpx.AsyncHTTPTransport(local_address=PROXY)
    async with httpx.AsyncClient(
        base_url=f"{shop.base_url}/api/v1", timeout=30, transport=transport
    ) as api:

        async def attempt(client_ip: str, number: int) -> int:
            response = await api.post(
                "/auth/login",
                json={"username": f"nobody{number}", "password": "Wr0ngPassword"},
                headers={"X-Forwarded-For": client_ip},
            )
            return response.status_code

        first = [await attempt("198.51.100.1", n) for n in range(4)]
        assert first == [401, 401, 401, 429]
        assert await attempt("198.51.100.2", 9) == 401  # another client: its own limit
