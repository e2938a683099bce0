"""The web-facing half of the security suite (tests/security/test_web_*.py): a bounded
crawler of the storefront, the gateway's operations from its OpenAPI schema, and the header
and body checks every answer must pass. The instances it attacks are
:mod:`support.security_web_plugin`'s."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import Morsel, SimpleCookie
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import httpx

from support.processes import RunningMercato
from support.storefront import ADMIN, ADMIN_PASSWORD, csrf_token

#: The one origin the development instance allows (CORS_ORIGINS).
ALLOWED_ORIGIN: Final = "https://shop.example"
HSTS_VALUE: Final = "max-age=31536000; includeSubDomains"
#: Referrer policies that never send a full URL to another site.
SAFE_REFERRER_POLICIES: Final = frozenset(
    {"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"}
)
#: Most pages one crawl visits, and most query variants of one path (pagers, filters).
CRAWL_LIMIT: Final = 80
VARIANTS_PER_PATH: Final = 3

#: What an error body must never show outside development: a stack trace, SQL, a driver.
LEAK_PATTERNS: Final = (
    re.compile(r"Traceback \(most recent call last\)"),
    re.compile(r'File "[^"]+", line \d+'),
    re.compile(r"\.py\b"),
    re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b .*\b(FROM|INTO|SET)\b", re.IGNORECASE),
    re.compile(r"sqlalchemy|sqlite3?|asyncpg|psycopg|aiosqlite|IntegrityError", re.IGNORECASE),
    re.compile(r"\b(127\.0\.0\.1|localhost):\d+"),
)


def admin_token(running: RunningMercato) -> str:
    answer = httpx.post(
        f"{running.base_url}/api/v1/auth/login",
        json={"username": ADMIN, "password": ADMIN_PASSWORD},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def create_product(running: RunningMercato, token: str, **fields: Any) -> dict[str, Any]:
    """A product created through the API as the administrator; its JSON."""
    body = {"sku": f"SEC-{uuid.uuid4().hex[:12]}", "price": "9.99", "stock": 5, **fields}
    answer = httpx.post(
        f"{running.base_url}/api/v1/products",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    product: dict[str, Any] = answer.json()
    return product


# --- sessions ---------------------------------------------------------------------------


def set_cookies(answer: httpx.Response) -> dict[str, Morsel[str]]:
    """The cookies ``answer`` sets, by name, with their attributes."""
    jar: SimpleCookie = SimpleCookie()
    for header in answer.headers.get_list("set-cookie"):
        jar.load(header)
    return dict(jar)


def session_cookie(answer: httpx.Response) -> str:
    """The ``name=value`` of the one cookie ``answer`` sets (the session's)."""
    ((name, morsel),) = set_cookies(answer).items()
    return f"{name}={morsel.value}"


async def sign_in_by_hand(client: httpx.AsyncClient, username: str, password: str) -> str:
    """Sign in where the session cookie is ``Secure`` (outside development) over plain
    HTTP, which no cookie jar sends back: the cookie goes by hand. The signed-in session's
    ``Cookie`` header."""
    page = await client.get("/login")
    anonymous = session_cookie(page)
    answer = await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": csrf_token(page.text)},
        headers={"Cookie": anonymous},
    )
    assert answer.status_code == 303, answer.text
    return session_cookie(answer)


# --- the crawler ----------------------------------------------------------------------


@dataclass(frozen=True)
class Form:
    """A form as a page shows it: where it posts, how, and its fields' names and values."""

    page: str
    action: str
    method: str
    fields: Mapping[str, str]


_FIELDS: Final = frozenset({"input", "select", "textarea", "button"})


class _PageParser(HTMLParser):
    """The links (``a``, ``link``, ``script``, ``img``) and forms of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.forms: list[tuple[str, str, dict[str, str]]] = []
        self._form: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag in ("a", "link") and "href" in values:
            self.links.append(values["href"])
        elif tag in ("script", "img") and "src" in values:
            self.links.append(values["src"])
        elif tag == "form":
            self._form = {}
            self.forms.append(
                (values.get("action", ""), values.get("method", "get").lower(), self._form)
            )
        elif self._form is not None and tag in _FIELDS and values.get("name"):
            self._form[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


@dataclass
class Crawl:
    """What a bounded crawl saw: every answer by path (with query), and every form."""

    answers: dict[str, httpx.Response] = field(default_factory=dict)
    forms: list[Form] = field(default_factory=list)

    def pages(self) -> dict[str, httpx.Response]:
        """The HTML answers."""
        return {
            path: answer
            for path, answer in self.answers.items()
            if answer.headers.get("content-type", "").startswith("text/html")
        }

    def post_forms(self) -> list[Form]:
        """Each state-changing form once (by action), wherever it was shown first."""
        seen: dict[str, Form] = {}
        for form in self.forms:
            if form.method == "post":
                seen.setdefault(form.action, form)
        return list(seen.values())


def local_target(base_url: str, page: str, link: str) -> str | None:
    """``link`` as a path with its query if it stays on this site, else None."""
    absolute = urlsplit(urljoin(base_url + page, link))
    if absolute.scheme not in ("http", "https") or absolute.netloc != urlsplit(base_url).netloc:
        return None
    return absolute.path + (f"?{absolute.query}" if absolute.query else "")


async def crawl(
    client: httpx.AsyncClient, start: Iterable[str] = ("/",), *, limit: int = CRAWL_LIMIT
) -> Crawl:
    """Visit ``start`` and every same-origin link (and redirect) from there with GET,
    breadth first, up to ``limit`` answers and :data:`VARIANTS_PER_PATH` queries a path."""
    base = str(client.base_url).rstrip("/")
    seen = Crawl()
    queue = list(start)
    variants: dict[str, int] = {}
    while queue and len(seen.answers) < limit:
        target = queue.pop(0)
        path = target.split("?")[0]
        if target in seen.answers or variants.get(path, 0) >= VARIANTS_PER_PATH:
            continue
        variants[path] = variants.get(path, 0) + 1
        answer = await client.get(target)
        seen.answers[target] = answer
        found: list[str] = []
        if answer.is_redirect:
            found.append(answer.headers["location"])
        if answer.headers.get("content-type", "").startswith("text/html"):
            parser = _PageParser()
            parser.feed(answer.text)
            found += parser.links
            for action, method, fields in parser.forms:
                resolved = local_target(base, target, action or target)
                if resolved is not None:
                    seen.forms.append(Form(target, resolved, method, fields))
                    if method == "get":
                        found.append(resolved)
        for link in found:
            local = local_target(base, target, link)
            if local is not None and local not in seen.answers:
                queue.append(local)
    return seen


# --- the API's operations -------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # with its parameters filled in


def operations(document: Mapping[str, Any], ids: Mapping[str, str]) -> list[Operation]:
    """Every operation of an OpenAPI document, its path parameters filled from ``ids``
    (by parameter name) or with a random UUID."""
    found = []
    for template, item in document["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), str(uuid.uuid4())), template)
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                found.append(Operation(method.upper(), path))
    return found


# --- the checks -----------------------------------------------------------------------


def csp_directives(policy: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in policy.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def csp_problems(policy: str) -> list[str]:
    """What makes a Content-Security-Policy weaker than the storefront's promise: scripts
    from this origin only (no inline or eval), no plug-ins, no ``<base>``, never framed."""
    directives = csp_directives(policy)
    problems = [word for word in ("'unsafe-inline'", "'unsafe-eval'", "*") if word in policy]
    default = directives.get("default-src", [])
    scripts = directives.get("script-src", default)
    # This origin's files only ('none' where nothing runs); a page may add a nonce or hash.
    extra = [word for word in scripts if not word.startswith(("'nonce-", "'sha256-", "'sha384-"))]
    if extra not in (["'self'"], ["'none'"]):
        problems.append(f"script-src {scripts}")
    if directives.get("object-src", default) != ["'none'"]:
        problems.append("object-src is not 'none'")
    if directives.get("frame-ancestors") != ["'none'"]:
        problems.append("frame-ancestors is not 'none'")
    if directives.get("base-uri") != ["'none'"]:  # no fallback to default-src (ASVS 3.4.3)
        problems.append("base-uri is not 'none'")
    return problems


def header_problems(answer: httpx.Response, *, hsts: bool) -> list[str]:
    """How ``answer`` falls short of the headers API.md promises on every gateway answer
    (``hsts``: whether this answer must carry Strict-Transport-Security)."""
    headers = answer.headers
    problems = []
    if headers.get("x-content-type-options") != "nosniff":
        problems.append("X-Content-Type-Options is not nosniff")
    if headers.get("x-frame-options") != "DENY":
        problems.append("X-Frame-Options is not DENY")
    if "content-security-policy" not in headers:
        problems.append("no Content-Security-Policy")
    else:
        problems += csp_problems(headers["content-security-policy"])
    kind = headers.get("content-type", "")
    if kind.startswith("text/") and "charset=" not in kind.lower():
        problems.append(f"Content-Type {kind} names no charset")
    if headers.get("referrer-policy") not in SAFE_REFERRER_POLICIES:
        problems.append(f"Referrer-Policy {headers.get('referrer-policy')!r}")
    if re.search(r"\d", headers.get("server", "")) or "x-powered-by" in headers:
        problems.append(f"a server banner: {headers.get('server') or headers['x-powered-by']}")
    if hsts and headers.get("strict-transport-security") != HSTS_VALUE:
        problems.append("no Strict-Transport-Security")
    if not hsts and "strict-transport-security" in headers:
        problems.append("Strict-Transport-Security over plain HTTP outside production")
    return problems


def leaks(answer: httpx.Response, internal_ports: Iterable[int] = ()) -> list[str]:
    """What ``answer`` (body and headers) shows of the inside: stack traces, SQL, drivers,
    internal addresses."""
    shown = answer.text + "\n" + "\n".join(f"{k}: {v}" for k, v in answer.headers.items())
    found = [pattern.pattern for pattern in LEAK_PATTERNS if pattern.search(shown)]
    found += [f":{port}" for port in internal_ports if re.search(rf":{port}\b", shown)]
    return found


def internal_ports(running: RunningMercato) -> list[int]:
    return [port for name, port in running.ports.items() if name != "gateway"]
