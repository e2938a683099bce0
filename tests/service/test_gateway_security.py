"""Auth offload, rate limits, security headers and CORS at the gateway."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from support.auth import bearer, claims, forge_token, issue_token, unsigned_token
from support.gateway import gateway_settings, running
from support.metrics import metric_value
from support.standin import StandIn, serve

pytestmark = pytest.mark.anyio

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "referrer-policy": "strict-origin-when-cross-origin",
}


def forged_tokens() -> dict[str, str]:
    other_key = ed25519.Ed25519PrivateKey.generate()
    return {
        "wrong signature": forge_token(key=other_key),
        "alg none": unsigned_token(),
        "expired": forge_token(claims(exp=1_000_000, iat=999_000, nbf=999_000)),
        "wrong audience": forge_token(claims(aud="someone-else")),
        "unknown kid": forge_token(headers={"kid": "nope"}),
        "garbage": "not.a.token",
    }


@pytest.mark.parametrize("kind", sorted(forged_tokens()))
async def test_a_forged_token_is_refused_before_it_reaches_a_service(kind: str) -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"orders": upstream.url})) as (_, http),
    ):
        response = await http.get("/api/v1/orders/echo", headers=bearer(forged_tokens()[kind]))
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    # Why it was refused is logged, never told: a forger learns nothing to refine the next try.
    assert set(response.json()) == {"type", "title", "status", "detail", "request_id"}
    assert standin.received == []


async def test_a_valid_token_goes_through_unchanged() -> None:
    standin = StandIn()
    token = issue_token("user-7")
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"orders": upstream.url})) as (_, http),
    ):
        response = await http.get("/api/v1/orders/echo", headers=bearer(token))
    assert response.status_code == 200
    assert standin.received[0].headers["authorization"] == f"Bearer {token}"


async def test_requests_without_a_token_reach_the_service_which_decides() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url})) as (_, http),
    ):
        response = await http.get("/api/v1/products/echo")
    assert response.status_code == 200
    assert "authorization" not in standin.received[0].headers


async def test_a_stale_token_does_not_block_the_token_endpoints() -> None:
    standin = StandIn()
    stale = forge_token(claims(exp=1_000_000, iat=999_000, nbf=999_000))
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"auth": upstream.url})) as (_, http),
    ):
        response = await http.post("/api/v1/auth/refresh", json={}, headers=bearer(stale))
    assert response.status_code == 200
    assert len(standin.received) == 1


async def test_auth_offload_can_be_switched_off() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"orders": upstream.url}, auth_offload=False)) as (_, http),
    ):
        response = await http.get("/api/v1/orders/echo", headers=bearer("not.a.token"))
    assert response.status_code == 200


async def test_rate_limit_per_address_answers_429_with_headers() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url}, rate_limit_api="3/minute")) as (
            _,
            http,
        ),
    ):
        answers = [await http.get("/api/v1/products/echo") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    refused = answers[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["ratelimit-limit"] == "3"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert 0 <= int(refused.headers["ratelimit-reset"]) <= 60
    assert len(standin.received) == 3


async def test_a_spoofed_forwarded_for_does_not_buy_a_fresh_limit() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(
            gateway_settings({"products": upstream.url}, rate_limit_api="2/minute"),
            client=("203.0.113.9", 4000),
        ) as (_, http),
    ):
        statuses = [
            (
                await http.get("/api/v1/products/echo", headers={"X-Forwarded-For": f"10.9.9.{i}"})
            ).status_code
            for i in range(3)
        ]
    assert statuses == [200, 200, 429]


async def test_a_trusted_proxy_forwarded_for_counts_per_real_client() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(
            gateway_settings(
                {"products": upstream.url}, rate_limit_api="1/minute", trusted_proxies="10.0.0.0/8"
            ),
            client=("10.0.0.5", 4000),
        ) as (_, http),
    ):
        one = await http.get("/api/v1/products/echo", headers={"X-Forwarded-For": "198.51.100.1"})
        two = await http.get("/api/v1/products/echo", headers={"X-Forwarded-For": "198.51.100.2"})
        again = await http.get("/api/v1/products/echo", headers={"X-Forwarded-For": "198.51.100.1"})
    assert (one.status_code, two.status_code, again.status_code) == (200, 200, 429)


async def test_a_route_group_has_its_own_limit() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(
            gateway_settings(
                {"auth": upstream.url, "products": upstream.url},
                rate_limit_routes={"auth": "1/minute"},
            )
        ) as (_, http),
    ):
        auth = [(await http.get("/api/v1/auth/echo")).status_code for _ in range(2)]
        products = [(await http.get("/api/v1/products/echo")).status_code for _ in range(2)]
    assert auth == [200, 429]
    assert products == [200, 200]


async def test_a_route_group_limit_applies_to_signed_in_requests_too() -> None:
    standin = StandIn()
    token = bearer(issue_token("user-9"))
    async with (
        serve(standin) as upstream,
        running(
            gateway_settings({"auth": upstream.url}, rate_limit_routes={"auth": "2/minute"})
        ) as (_, http),
    ):
        statuses = [
            (await http.get("/api/v1/auth/echo", headers=token)).status_code for _ in range(3)
        ]
    assert statuses == [200, 200, 429]


async def test_the_per_user_limit_follows_the_token_not_the_address() -> None:
    standin = StandIn()
    token = issue_token("user-1")
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"orders": upstream.url}, rate_limit_user="2/minute")) as (
            _,
            http,
        ),
    ):
        mine = [
            (await http.get("/api/v1/orders/echo", headers=bearer(token))).status_code
            for _ in range(3)
        ]
        other = await http.get("/api/v1/orders/echo", headers=bearer(issue_token("user-2")))
        anonymous = await http.get("/api/v1/orders/echo")
    assert mine == [200, 200, 429]
    assert other.status_code == 200
    assert anonymous.status_code == 200


async def test_signed_in_requests_count_per_user_not_against_the_address_limit() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(
            gateway_settings(
                {"orders": upstream.url}, rate_limit_api="2/minute", rate_limit_user="5/minute"
            )
        ) as (_, http),
    ):
        signed_in = [
            await http.get("/api/v1/orders/echo", headers=bearer(issue_token("office-user")))
            for _ in range(4)
        ]
        anonymous = [(await http.get("/api/v1/orders/echo")).status_code for _ in range(3)]
    assert [r.status_code for r in signed_in] == [200, 200, 200, 200]
    assert signed_in[-1].headers["ratelimit-limit"] == "5"
    assert signed_in[-1].headers["ratelimit-remaining"] == "1"
    assert anonymous == [200, 200, 429]


async def test_forged_tokens_count_against_the_address_and_end_in_429() -> None:
    standin = StandIn()
    forged = forged_tokens()["wrong signature"]
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"orders": upstream.url}, rate_limit_api="2/minute")) as (
            _,
            http,
        ),
    ):
        statuses = [
            (await http.get("/api/v1/orders/echo", headers=bearer(forged))).status_code
            for _ in range(3)
        ]
        anonymous = await http.get("/api/v1/orders/echo")
    assert statuses == [401, 401, 429]
    assert anonymous.status_code == 429
    assert standin.received == []


@pytest.mark.parametrize(
    "path", ["/healthz", "/api/v1/products/echo", "/api/v1/nothing", "/no-such-page", "/docs"]
)
async def test_every_answer_carries_the_security_headers_and_no_banner(path: str) -> None:
    standin = StandIn(response_headers=[(b"x-frame-options", b"ALLOWALL"), (b"server", b"uvicorn")])
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url})) as (_, http),
    ):
        response = await http.get(f"https://gateway.test{path}")
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get_list(name) == [value]
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert "server" not in response.headers


async def test_cors_allows_a_configured_origin_only() -> None:
    standin = StandIn()
    allowed, foreign = "https://shop.example", "https://evil.example"
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url}, cors_origins=allowed)) as (_, http),
    ):
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        }
        ok = await http.options("/api/v1/products/echo", headers={"Origin": allowed, **preflight})
        bad = await http.options("/api/v1/products/echo", headers={"Origin": foreign, **preflight})
        simple_ok = await http.get("/api/v1/products/echo", headers={"Origin": allowed})
        simple_bad = await http.get("/api/v1/products/echo", headers={"Origin": foreign})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == allowed
    assert ok.headers["access-control-allow-credentials"] == "true"
    assert bad.status_code == 400
    assert "access-control-allow-origin" not in bad.headers
    assert simple_ok.headers["access-control-allow-origin"] == allowed
    assert "access-control-allow-origin" not in simple_bad.headers
    assert len(standin.received) == 2  # preflights are answered by the gateway


async def test_answers_vary_on_origin_when_origins_are_allowed() -> None:
    standin = StandIn(response_headers=[(b"vary", b"Accept-Encoding")])
    async with (
        serve(standin) as upstream,
        running(
            gateway_settings({"products": upstream.url}, cors_origins="https://shop.example")
        ) as (_, http),
    ):
        plain = await http.get("/api/v1/products/echo")
        cross = await http.get("/api/v1/products/echo", headers={"Origin": "https://shop.example"})
    for response in (plain, cross):
        varies = {v.strip() for line in response.headers.get_list("vary") for v in line.split(",")}
        assert {"Origin", "Accept-Encoding"} <= varies
    assert "access-control-allow-origin" not in plain.headers


async def test_an_upstream_cannot_widen_the_cors_policy() -> None:
    standin = StandIn(response_headers=[(b"access-control-allow-origin", b"*")])
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url})) as (_, http),
    ):
        response = await http.get(
            "/api/v1/products/echo", headers={"Origin": "https://evil.example"}
        )
    assert "access-control-allow-origin" not in response.headers


async def test_only_allowed_hosts_are_answered_but_probes_always_are() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(
            gateway_settings({"products": upstream.url}, allowed_hosts="shop.example,*.api.example")
        ) as (_, http),
    ):
        forged = await http.get("/api/v1/products/echo", headers={"Host": "evil.example"})
        page = await http.get("/docs", headers={"Host": "evil.example:8000"})
        exact = await http.get("/api/v1/products/echo", headers={"Host": "shop.example:8000"})
        wildcard = await http.get("/api/v1/products/echo", headers={"Host": "eu.api.example"})
        probe = await http.get("/healthz", headers={"Host": "10.1.2.3:8000"})
        # Not a host name at all, though it ends like an allowed one.
        malformed = await http.get("/api/v1/products/echo", headers={"Host": "evil/.api.example"})
    assert forged.status_code == 400
    assert malformed.status_code == 400
    assert forged.headers["content-type"] == "application/problem+json"
    assert forged.headers["x-frame-options"] == "DENY"
    assert page.status_code == 400
    assert (exact.status_code, wildcard.status_code, probe.status_code) == (200, 200, 200)
    assert len(standin.received) == 2


async def test_an_answer_with_its_own_policy_keeps_it() -> None:
    own = "default-src 'self'; script-src 'self' 'nonce-abc123'"
    standin = StandIn(response_headers=[(b"content-security-policy", own.encode())])
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url})) as (_, http),
    ):
        response = await http.get("/api/v1/products/echo")
    assert response.headers.get_list("content-security-policy") == [own]


async def test_every_429_is_counted_under_the_name_of_its_limit() -> None:
    standin = StandIn()
    token = bearer(issue_token("user-3"))
    async with (
        serve(standin) as upstream,
        running(
            gateway_settings(
                {"auth": upstream.url, "orders": upstream.url},
                rate_limit_api="1/minute",
                rate_limit_user="1/minute",
                rate_limit_routes={"auth": "1/minute"},
            )
        ) as (_, http),
    ):
        statuses = [
            (await http.get(path, headers=headers)).status_code
            for path, headers in [
                ("/api/v1/orders/echo", {}),
                ("/api/v1/orders/echo", {}),  # api
                ("/api/v1/auth/echo", {}),
                ("/api/v1/auth/echo", {}),  # the route group's
                ("/api/v1/orders/echo", token),
                ("/api/v1/orders/echo", token),  # user
            ]
        ]
        metrics = (await http.get("/metrics")).text
    assert statuses == [200, 429, 200, 429, 200, 429]
    refused = {
        limit: metric_value(metrics, "rate_limit_refusals_total", service="gateway", limit=limit)
        for limit in ("api", "auth", "user")
    }
    assert refused == {"api": 1, "auth": 1, "user": 1}
    assert metric_value(metrics, "rate_limit_refusals_total") == 3
