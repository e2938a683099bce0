"""The black-box security suite: `mercato up` as a user runs it, attacked through its gateway
(and each service directly where the risk is service-to-service).

Two instances start together at the beginning of the session:

- ``mercato``: embedded defaults with a bootstrapped administrator; the login, password-reset
  and API limits are raised (checks there are not about them: fifty buyers sign in, the
  enumeration check logs in a hundred times) and Argon2 is at its cheapest (the storage
  check still reads ``$argon2id$``);
- ``limited``: the login limits at their defaults and a small ``RATE_LIMIT_API``, for the
  limit checks; each of those connects from a loopback address of its own
  (127.0.0.0/8), so that no check spends another's budget.

Every client comes from :func:`support.security_api.client`: the fixtures below share one
:class:`~support.security_api.Seen` (``secrets_seen``) that collects every password and
token handed out and every JSON answer received; the checks that read it (secrets in logs,
undocumented fields) run after every other test of the session. A module that starts an
instance of its own joins the log check with ``secrets_seen.instances.append(running)``, and
adds every password and token it uses with ``secrets_seen.add(...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.processes import RunningMercato, free_ports, mercato_up
from support.security_api import API, Account, Seen, client, log_in, sign_up, unique_name

ADMIN, ADMIN_PASSWORD = "secadmin", "Adm1nSecuritySuite"
#: The API limit of the ``limited`` instance, per client address.
API_LIMIT = 40
RAISED = "100000/minute"

MAIN_ENV = {
    "MERCATO_ADMIN_USERNAME": ADMIN,
    "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "RATE_LIMIT_LOGIN": RAISED,
    "RATE_LIMIT_LOGIN_ADDRESS": RAISED,
    "RATE_LIMIT_PASSWORD_RESET": RAISED,
    "RATE_LIMIT_PASSWORD_RESET_ADDRESS": RAISED,
    "RATE_LIMIT_API": RAISED,
    "RATE_LIMIT_USER": RAISED,
    "ARGON2_TIME_COST": "1",
    "ARGON2_MEMORY_COST": "8192",
}
LIMITED_ENV = {"RATE_LIMIT_API": f"{API_LIMIT}/minute"}

#: The checks over everything the session saw: they run last (pytest_collection_modifyitems).
LAST = ("test_no_password_or_token_appears_in_any_log", "test_answers_carry_only_documented_fields")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.security)
    items.sort(key=lambda item: getattr(item, "originalname", item.name) in LAST)


@pytest.fixture(scope="session")
def secrets_seen() -> Seen:
    """The session's registry: ``.add(secret)`` every password and token a check uses."""
    return Seen(secrets={ADMIN_PASSWORD})


@pytest.fixture(scope="session")
def _instances(
    tmp_path_factory: pytest.TempPathFactory, secrets_seen: Seen
) -> Iterator[dict[str, RunningMercato]]:
    """Both instances, started in parallel (each takes a while to be ready)."""
    main_ports = free_ports()
    limited_ports = free_ports()
    while set(limited_ports.values()) & set(main_ports.values()):
        limited_ports = free_ports()
    managers = {
        "main": mercato_up(tmp_path_factory.mktemp("security"), main_ports, env=MAIN_ENV),
        "limited": mercato_up(
            tmp_path_factory.mktemp("security-limited"), limited_ports, env=LIMITED_ENV
        ),
    }
    with ExitStack() as stack, ThreadPoolExecutor(len(managers)) as pool:
        futures = {name: pool.submit(manager.__enter__) for name, manager in managers.items()}
        running: dict[str, RunningMercato] = {}
        errors: list[BaseException] = []
        for name, future in futures.items():
            try:
                running[name] = future.result()
            except BaseException as exc:
                errors.append(exc)
            else:
                stack.push(managers[name].__exit__)
                secrets_seen.instances.append(running[name])
        if errors:
            raise errors[0]
        yield running


@pytest.fixture(scope="session")
def mercato(_instances: dict[str, RunningMercato]) -> RunningMercato:
    """The main instance (raised login limits, an administrator)."""
    return _instances["main"]


@pytest.fixture(scope="session")
def limited(_instances: dict[str, RunningMercato]) -> RunningMercato:
    """The instance with the default login limits and ``RATE_LIMIT_API`` = ``API_LIMIT``."""
    return _instances["limited"]


@pytest.fixture(scope="session")
def gateway_url(mercato: RunningMercato) -> str:
    return mercato.base_url


@pytest.fixture
def http(gateway_url: str, secrets_seen: Seen) -> Iterator[httpx.Client]:
    """A client of the main instance's gateway, recording what it sees."""
    with client(gateway_url, secrets_seen) as http:
        yield http


@pytest.fixture(scope="session")
def schema(gateway_url: str) -> dict[str, Any]:
    """The gateway's OpenAPI document (every service's operations under /api/v1)."""
    document: dict[str, Any] = httpx.get(f"{gateway_url}/openapi.json", timeout=30).json()
    return document


@pytest.fixture(scope="session")
def admin(gateway_url: str, secrets_seen: Seen) -> Account:
    """The bootstrapped administrator, signed in."""
    with client(gateway_url, secrets_seen) as http:
        tokens = log_in(http, secrets_seen, ADMIN, ADMIN_PASSWORD)
        me = http.get(
            f"{API}/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
    return Account(
        ADMIN, ADMIN_PASSWORD, me.json()["id"], tokens["access_token"], tokens["refresh_token"]
    )


@pytest.fixture
def new_customer(http: httpx.Client, secrets_seen: Seen) -> Callable[[], Account]:
    """Registers and signs in one more customer each call."""
    return lambda: sign_up(http, secrets_seen)


@pytest.fixture
def customer(new_customer: Callable[[], Account]) -> Account:
    """A customer of its own for the test, signed in."""
    return new_customer()


@pytest.fixture
def product(http: httpx.Client, admin: Account) -> dict[str, Any]:
    """A product of its own for the test, created by the administrator."""
    body = {"sku": unique_name("SKU"), "name": unique_name("Widget"), "price": "9.99", "stock": 5}
    created = http.post(f"{API}/products", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    answer: dict[str, Any] = created.json()
    return answer
