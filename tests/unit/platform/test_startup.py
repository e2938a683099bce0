"""Which servers a process waits for at start-up, named by the setting a user sets."""

from __future__ import annotations

import pytest

from mercato.platform.startup import Dependency, dependencies
from mercato.settings import load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "BROKER_URL", "ORDERS_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_embedded_backends_need_nothing() -> None:
    settings = load_settings(env_file=None, environment="testing")

    assert dependencies(settings, ["auth", "users", "products", "orders"]) == []


def test_each_server_once_under_the_setting_that_names_it() -> None:
    settings = load_settings(
        env_file=None,
        environment="testing",
        database_url="postgres://app:pw@db.internal/shop",
        orders_database_url="postgresql://app:pw@orders-db.internal:6543/orders",
        redis_url="redis://:pw@cache.internal/0",
        broker_url="kafka://k1:9093,k2",
    )

    assert dependencies(settings, ["auth", "users", "orders"]) == [
        Dependency("DATABASE_URL", "db.internal", 5432),
        Dependency("ORDERS_DATABASE_URL", "orders-db.internal", 6543),
        Dependency("REDIS_URL", "cache.internal", 6379),
        Dependency("BROKER_URL", "k1", 9093),
        Dependency("BROKER_URL", "k2", 9092),
    ]


def test_only_the_databases_of_the_services_asked_for() -> None:
    settings = load_settings(
        env_file=None,
        environment="testing",
        orders_database_url="postgresql://orders-db/orders",
        broker_url="amqps://mq.internal",
    )

    assert dependencies(settings, ["products"]) == [Dependency("BROKER_URL", "mq.internal", 5671)]


def test_a_unix_socket_is_not_waited_for() -> None:
    settings = load_settings(env_file=None, environment="testing", redis_url="unix:///run/r.sock")

    assert dependencies(settings, ["products"]) == []


def test_the_description_names_setting_host_and_port_and_no_credentials() -> None:
    settings = load_settings(
        env_file=None, environment="testing", broker_url="amqp://guest:hunter2@[::1]:5673/"
    )

    [broker] = dependencies(settings, ["orders"])

    assert str(broker) == "BROKER_URL ([::1]:5673)"


def test_a_process_without_backends_needs_redis_but_no_broker() -> None:
    """The gateway alone: no database, no events, but shared rate limits in Redis."""
    settings = load_settings(
        env_file=None,
        environment="testing",
        redis_url="redis://cache.internal/0",
        broker_url="amqp://mq.internal/",
    )

    assert dependencies(settings, []) == [Dependency("REDIS_URL", "cache.internal", 6379)]
