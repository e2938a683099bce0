"""The instances the web half of the security suite attacks, as a pytest plugin: each
``test_web_*`` module names it in ``pytest_plugins``, so each instance starts once for the
whole run, whichever modules ask for it. The fixtures carry a ``web_`` prefix
(tests/security/conftest.py belongs to the API half of the suite).

- ``web_shop``: `mercato up` in development (docs open, an administrator bootstrapped, one
  allowed CORS origin), whatever ``MERCATO_E2E_PROFILE`` says: each test picks its profile.
- ``web_production``: the production profile (migrated first), the same administrator.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.processes import RunningMercato, free_ports, mercato_up
from support.production import production_env
from support.security_web import ALLOWED_ORIGIN
from support.storefront import ADMIN, ADMIN_PASSWORD


def admin_env(**extra: str) -> dict[str, str]:
    """The bootstrapped administrator, and sign-in limits a suite that signs in dozens of
    times a minute stays under (the limits themselves are the API half's subject)."""
    return {
        "MERCATO_ADMIN_USERNAME": ADMIN,
        "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "RATE_LIMIT_LOGIN": "1000/minute",
        "RATE_LIMIT_LOGIN_ADDRESS": "1000/minute",
        **extra,
    }


@pytest.fixture(scope="session")
def web_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMercato]:
    env = admin_env(ENVIRONMENT="development", CORS_ORIGINS=ALLOWED_ORIGIN)
    with mercato_up(tmp_path_factory.mktemp("web-shop"), free_ports(), env=env) as running:
        yield running


@pytest.fixture(scope="session")
def web_production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMercato]:
    env = {**production_env(), **admin_env(CORS_ORIGINS=ALLOWED_ORIGIN)}
    with mercato_up(tmp_path_factory.mktemp("web-production"), free_ports(), env=env) as running:
        yield running
