"""The products service on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from support.products import RunningProducts, race_for_stock, running_products
from support.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_concurrent_orders_never_oversell_on_postgres(postgres_url: str) -> None:
    async with running_products(database_url=postgres_url) as products:
        await race_for_stock(products, orders=30)


async def test_crud_search_and_money_on_postgres(postgres_url: str) -> None:
    async with running_products(database_url=postgres_url) as products:
        lamp = await products.create(sku="L", name="Desk Lamp", price="9999999999.99")
        await products.create(sku="M", name="100% Mug", price="0.01", category="kitchen")
        page = (await products.client.get("/products", params={"q": "100%"})).json()
        assert [item["sku"] for item in page["items"]] == ["M"]
        assert (await products.client.get("/products", params={"q": "LAMP"})).json()["total"] == 1
        cheap = (await products.client.get("/products", params={"max_price": "0.01"})).json()
        assert [item["price"] for item in cheap["items"]] == ["0.01"]
        fetched = (await products.client.get(f"/products/{lamp['id']}")).json()
        assert fetched["price"] == "9999999999.99"
        response = await products.client.patch(
            f"/products/{lamp['id']}", json={"price": "10.10"}, headers=products.admin
        )
        assert response.json()["price"] == "10.10"


async def test_search_has_trigram_indexes_on_postgres(postgres_url: str) -> None:
    async with running_products(database_url=postgres_url) as products:
        async with products.context.db.unit_of_work(read_only=True) as uow:
            indexes = set(
                (
                    await uow.session.execute(
                        text("SELECT indexname FROM pg_indexes WHERE tablename = 'products'")
                    )
                ).scalars()
            )
        assert {"ix_products_name_trgm", "ix_products_description_trgm"} <= indexes


async def test_two_instances_sharing_redis_never_serve_a_stale_read(
    postgres_url: str, redis_url: str
) -> None:
    """A write through one instance is seen by the next read through the other."""
    # A Redis database of its own: lists are keyed by their query, not by the database.
    settings = {"database_url": postgres_url, "redis_url": redis_url.rsplit("/", 1)[0] + "/11"}
    async with running_products(**settings) as one, running_products(**settings) as two:
        await one.catalogue.invalidate()
        product = await one.create(sku="S", name="Shared", stock=1)
        url = f"/products/{product['id']}"
        assert (await two.client.get(url)).json()["name"] == "Shared"  # cached in Redis
        assert (await two.client.get("/products")).json()["total"] == 1
        await one.client.patch(url, json={"name": "Renamed"}, headers=one.admin)
        assert (await two.client.get(url)).json()["name"] == "Renamed"
        assert (await two.client.get("/products")).json()["items"][0]["name"] == "Renamed"


async def test_a_local_layer_before_redis_is_dropped_on_every_instance(
    postgres_url: str, redis_url: str
) -> None:
    """With PRODUCTS_LOCAL_CACHE_TTL, reads are served from memory; a write on one instance
    drops the copies on the other through the Redis broadcast."""
    settings = {
        "database_url": postgres_url,
        "redis_url": redis_url.rsplit("/", 1)[0] + "/11",
        "products_local_cache_ttl": 60,
    }
    async with running_products(**settings) as one, running_products(**settings) as two:
        await one.catalogue.invalidate()
        product = await one.create(sku="LL", name="Local")
        path = f"/products/{product['id']}"
        assert (await two.client.get(path)).json()["name"] == "Local"
        await change_in_redis_only(two, product["id"])
        assert (await two.client.get(path)).json()["name"] == "Local"  # from the local layer
        await one.client.patch(path, json={"name": "Changed"}, headers=one.admin)

        # Redis pub/sub delivers asynchronously: the other instance hears it within moments.
        async def renamed() -> bool:
            return bool((await two.client.get(path)).json()["name"] == "Changed")

        await eventually(renamed, within=2)


async def change_in_redis_only(products: RunningProducts, product_id: str) -> None:
    """Drop the shared copy, so that only the local layer can still answer."""
    assert products.context.cache is not None
    await products.context.cache.delete(f"product:{product_id}")


async def test_nul_characters_are_refused_not_a_server_error(postgres_url: str) -> None:
    """PostgreSQL text cannot hold NUL: every way in answers 4xx, never 500."""
    async with running_products(database_url=postgres_url) as products:
        product = await products.create(sku="NUL", name="Plain")
        client, admin = products.client, products.admin
        for params in ({"q": "a\x00b"}, {"category": "\x00"}):
            assert (await client.get("/products", params=params)).status_code == 422
        assert (await client.get("/products/a%00b")).status_code == 404
        bad = {"sku": "N\x00", "name": "n", "price": "1.00"}
        assert (await client.post("/products", json=bad, headers=admin)).status_code == 422
        url = f"/products/{product['id']}"
        renamed = await client.patch(url, json={"name": "a\x00"}, headers=admin)
        assert renamed.status_code == 422
        assert (
            await client.patch("/products/a%00", json={"name": "x"}, headers=admin)
        ).status_code == 404
        assert (await client.delete("/products/a%00", headers=admin)).status_code == 404


class TcpProxy:
    """A TCP forwarder the test can cut, to take the database away from the service."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()


async def test_a_database_outage_is_a_503(postgres_url: str) -> None:
    """The database goes away: reads that need it and writes answer 503 problem+json
    (cached reads keep working), and nothing internal leaks."""
    parts = urlsplit(postgres_url)
    proxy = TcpProxy(parts.port or 5432)
    port = await proxy.start()
    proxied = parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}").geturl()
    async with running_products(database_url=proxied, graceful_timeout=1) as products:
        cached = await products.create(sku="OUT", name="Cached")
        url = f"/products/{cached['id']}"
        assert (await products.client.get(url)).status_code == 200
        await proxy.cut()
        assert (await products.client.get(url)).status_code == 200  # from the cache
        for response in (
            await products.client.get("/products/another-id"),
            await products.client.get("/products", params={"q": "x"}),
            await products.client.post(
                "/products",
                json={"sku": "NEW", "name": "n", "price": "1.00"},
                headers=products.admin,
            ),
        ):
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert "asyncpg" not in response.text
            assert "127.0.0.1" not in response.text


async def test_a_connection_killed_mid_request_answers_503_then_the_service_recovers(
    postgres_url: str,
) -> None:
    """``pg_terminate_backend`` on the connection a request is using, while its query
    runs: the client gets a 503 naming the database (not a 500), and the next request
    is served on a fresh connection."""
    import asyncpg

    async with running_products(database_url=postgres_url, products_cache_enabled=False) as shop:
        product = await shop.create(sku="K", name="Killed")
        dsn = postgres_url.replace("+asyncpg", "")
        locker, killer = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
        try:
            locking = locker.transaction()
            await locking.start()
            await locker.execute("LOCK TABLE products.products IN ACCESS EXCLUSIVE MODE")
            request = asyncio.create_task(shop.client.get(f"/products/{product['id']}"))

            async def blocked_backends() -> list[int]:
                rows = await killer.fetch(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE application_name = 'mercato' AND wait_event_type = 'Lock'"
                )
                return [row["pid"] for row in rows]

            # the request's query waits on the lock
            for pid in await eventually(blocked_backends):
                await killer.execute("SELECT pg_terminate_backend($1)", pid)
            response = await request
            await locking.rollback()
        finally:
            await locker.close()
            await killer.close()
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "5"
        assert response.json()["dependency"] == "database"
        assert "middle of operation" not in response.text
        again = await shop.client.get(f"/products/{product['id']}")
        assert again.status_code == 200
