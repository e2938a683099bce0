"""The ``mercato`` command."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, get_args

import typer

from mercato.platform.settings import ConfigError
from mercato.platform.settings_sources import env_name, masked_value
from mercato.settings import (
    BACKEND_SERVICES,
    SERVICES,
    ServiceName,
    Settings,
    derived_values,
    env_file_warnings,
    load_settings,
    setting_sources,
)

# Plain click help (rich_markup_mode=None): paragraphs re-wrapped instead of keeping the
# docstrings' line breaks, and no "<bool>" after flags such as --help.
app = typer.Typer(
    name="mercato",
    help="Mercato: an e-commerce backend as Python microservices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
config_app = typer.Typer(
    help="Inspect and validate the configuration.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(config_app, name="config")
events_app = typer.Typer(
    help="Operate the event system.", no_args_is_help=True, rich_markup_mode=None
)
dlq_app = typer.Typer(
    help="Dead letters: events a consumer gave up on.", no_args_is_help=True, rich_markup_mode=None
)
events_app.add_typer(dlq_app, name="dlq")
app.add_typer(events_app, name="events")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="A config file (YAML, JSON, TOML or INI); also MERCATO_CONFIG.",
        envvar="MERCATO_CONFIG",
        show_envvar=False,
    ),
]
ServiceArgument = Annotated[
    str, typer.Argument(metavar="SERVICE", help=f"One of: {', '.join(SERVICES)}.")
]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"mercato {version('mercato')}")
        raise typer.Exit()


@app.callback()
def _main(
    _version_option: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Mercato: an e-commerce backend as Python microservices."""


def _fail(problems: list[str], code: int = 2) -> NoReturn:
    for line in problems:
        typer.echo(f"mercato: {line}", err=True)
    raise typer.Exit(code)


def _settings(
    config: Path | None,
    *,
    check: bool = True,
    services: Sequence[ServiceName] = SERVICES,
    **overrides: Any,
) -> Settings:
    """Load (and by default validate, for ``services``) the settings; exit 2 with one line
    per problem. A name in ``.env`` that sets nothing is a warning line."""
    for line in env_file_warnings():
        typer.echo(f"mercato: warning: {line}", err=True)
    try:
        settings = load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
        if check:
            settings.check(services)
    except ConfigError as exc:
        _fail(exc.problems)
    return settings


def _service(name: str) -> ServiceName:
    if name not in get_args(ServiceName):
        _fail([f"unknown service {name!r}; choose one of {', '.join(SERVICES)}"])
    service: ServiceName = name  # type: ignore[assignment]
    return service


def _backend_service(name: str) -> ServiceName:
    """A service with a database of its own (every one but the gateway)."""
    service = _service(name)
    if service == "gateway":
        _fail([f"the gateway has no database; choose one of {', '.join(BACKEND_SERVICES)}"])
    return service


def _wait_for_dependencies(settings: Settings, services: Sequence[ServiceName]) -> None:
    """Wait up to STARTUP_TIMEOUT for the servers ``services`` need; exit 1 with one line
    naming the one that did not answer."""
    from mercato.platform.startup import (
        Dependency,
        DependencyUnavailable,
        dependencies,
        wait_for,
    )
    from mercato.serving import run_event_loop

    def waiting(dependency: Dependency) -> None:
        typer.echo(
            f"mercato: waiting up to {settings.startup_timeout:g} s for {dependency}", err=True
        )

    backends = [service for service in services if service in BACKEND_SERVICES]
    try:
        run_event_loop(
            wait_for(dependencies(settings, backends), settings.startup_timeout, on_wait=waiting)
        )
    except DependencyUnavailable as exc:
        _fail([str(exc)], code=1)


def _configure_logging(settings: Settings, service: str) -> None:
    from mercato.platform.logging import configure_logging

    try:
        configure_logging(
            service=service,
            level=settings.effective_log_level,
            fmt=settings.log_format or "console",
            log_file=settings.log_file,
            rotate=settings.log_rotate if settings.log_file else None,
            backups=settings.log_backups,
        )
    except OSError as exc:
        detail = f"{exc.strerror} ({exc.filename})" if exc.filename else str(exc)
        _fail([f"LOG_FILE {settings.log_file} cannot be opened: {detail}"])


@app.command()
def up(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on (HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Gateway port (PORT).")] = None,
) -> None:
    """Run the gateway, the four services and their event workers in this process."""
    from mercato.serving import run_all, run_event_loop

    settings = _settings(config, host=host, port=port)
    _configure_logging(settings, "mercato")
    _wait_for_dependencies(settings, SERVICES)

    def announce() -> None:
        lines = [f"  {service:<9} {settings.service_url(service)}" for service in SERVICES]
        gateway = settings.service_url("gateway")
        typer.echo(
            "Mercato is up:\n"
            + "\n".join(lines)
            + f"\n  API       {gateway}/api/v1/\n  ready     {gateway}/readyz\n"
            + (f"  docs      {gateway}/docs\n" if settings.docs_enabled else "")
            + "Press Ctrl-C to stop."
        )

    code = run_event_loop(run_all(settings, on_ready=announce))
    typer.echo("Mercato stopped." if code == 0 else "Mercato could not start.", err=code != 0)
    raise typer.Exit(code)


@app.command()
def serve(
    service: ServiceArgument,
    config: ConfigOption = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes; >1 runs gunicorn.")] = 1,
    host: Annotated[str | None, typer.Option(help="Interface to listen on (HOST).")] = None,
) -> None:
    """Run one service (or the gateway) on its own port."""
    from mercato.serving import serve_one

    name = _service(service)
    settings = _settings(config, services=[name], host=host)
    _configure_logging(settings, name)
    _wait_for_dependencies(settings, [name])
    serve_one(settings, name, workers=workers)


@app.command()
def worker(
    config: ConfigOption = None,
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of its /healthz, /readyz and /metrics.")
    ] = 8005,
    service: Annotated[
        list[str] | None,
        typer.Option(
            "--service",
            "-s",
            metavar="SERVICE",
            help="Run this service's outbox relay and event consumers without HTTP "
            "(repeatable; 'all' for every service).",
        ),
    ] = None,
) -> None:
    """Run the notification worker on its own (order.confirmed / order.rejected -> mail).

    Run the orders service with NOTIFICATIONS_IN_PROCESS=false beside it. With --service,
    run that service's event worker (outbox relay and consumers) instead, with no port.
    """
    if service:
        _event_worker(config, service)
        return
    import uvicorn

    from mercato.messaging import SharedMessaging
    from mercato.orders.app import create_worker_app
    from mercato.serving import consumer_groups, uvicorn_config

    settings = _settings(config, services=["orders"])
    _configure_logging(settings, "worker")
    _wait_for_dependencies(settings, ["orders"])
    _announce_worker(settings, {"notifications": ["notifications"]})
    typer.echo(f"  health, readiness and metrics on http://{settings.host}:{port}")
    app = create_worker_app(settings, shared=SharedMessaging(consumer_groups()))
    uvicorn.Server(uvicorn_config(app, settings, port)).run()


def _event_worker(config: Path | None, names: list[str]) -> None:
    from mercato.messaging import in_process_broker
    from mercato.messaging.worker import run_headless
    from mercato.serving import build_app, run_event_loop

    services = list(BACKEND_SERVICES) if "all" in names else [_service(name) for name in names]
    if "gateway" in services:
        _fail(["the gateway has no event worker"])
    settings = _settings(config, services=services)
    _configure_logging(settings, "worker")
    _wait_for_dependencies(settings, services)
    _announce_worker(settings, {name: _consumer_groups(settings, name) for name in services})
    broker = in_process_broker(settings)  # memory: the services of this worker share it
    apps = [build_app(name, settings, broker=broker) for name in services]
    run_event_loop(run_headless(apps))


def _consumer_groups(settings: Settings, service: ServiceName) -> list[str]:
    """The consumer groups a service's event worker runs."""
    from mercato.serving import consumer_groups

    groups: list[str] = [service] if service in consumer_groups() else []
    if service == "orders" and settings.notifications_in_process:
        groups.append("notifications")
    return groups


def _announce_worker(settings: Settings, groups_by_service: dict[str, list[str]]) -> None:
    """Say what the worker consumes and from where; warn when nothing can reach it."""
    from mercato.serving import consumer_groups

    known = consumer_groups()
    broker = settings.broker_url
    source = (
        "the in-memory broker of this process"
        if not broker or broker.startswith("memory:")
        else str(masked_value("broker_url", broker))
    )
    typer.echo(f"Event worker on {source}:")
    for name, groups in groups_by_service.items():
        consumed = [f"{group} ({', '.join(known[group])})" for group in groups] or ["nothing"]
        relay = "; relays its outbox" if name in BACKEND_SERVICES else ""
        typer.echo(f"  {name}: consumes {'; '.join(consumed)}{relay}")
    if not broker or broker.startswith("memory:"):
        typer.echo(
            "mercato: warning: BROKER_URL is not set: this process has an in-memory broker"
            " of its own and receives no event another process publishes; set BROKER_URL"
            " (amqp:// or kafka://) here and in the services",
            err=True,
        )


def _databases(config: Path | None, service: str | None) -> tuple[Settings, list[ServiceName]]:
    services: list[ServiceName] = [_backend_service(service)] if service else list(BACKEND_SERVICES)
    settings = _settings(config, services=services)
    return settings, services


@dlq_app.command("list")
def dlq_list(
    config: ConfigOption = None,
    service: Annotated[str | None, typer.Option(help="Only this service's database.")] = None,
    consumer: Annotated[str | None, typer.Option(help="Only this consumer group.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Show the dead letters not yet replayed, per service database."""
    from mercato.messaging.dead_letters import list_dead_letters
    from mercato.serving import run_event_loop

    settings, services = _databases(config, service)

    async def collect() -> list[tuple[str, Any]]:
        found: list[tuple[str, Any]] = []
        for name in services:
            database = _open_database(settings, name)
            try:
                letters = await list_dead_letters(database, consumer=consumer, limit=limit)
            except Exception as exc:
                _fail([f"{name}: cannot read dead letters ({type(exc).__name__})"], code=1)
            finally:
                await database.dispose()
            found += [(name, letter) for letter in letters]
        return found

    rows = run_event_loop(collect())
    for name, letter in rows:
        if as_json:
            typer.echo(json.dumps({"service": name, **_letter_dict(letter)}, default=str))
        else:
            typer.echo(
                f"{name:<9} #{letter.id:<6} {letter.consumer:<10} {letter.event_type:<18} "
                f"{letter.event_id:<36} attempts={letter.attempts} {letter.error}"
            )
    if not as_json:
        typer.echo(f"{len(rows)} dead letter(s)")


@dlq_app.command("replay")
def dlq_replay(
    config: ConfigOption = None,
    service: Annotated[str | None, typer.Option(help="Only this service's database.")] = None,
    consumer: Annotated[str | None, typer.Option(help="Only this consumer group.")] = None,
    ids: Annotated[
        list[int] | None,
        typer.Option("--id", metavar="ID", help="Replay these dead letters (repeatable)."),
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every pending one.")] = False,
) -> None:
    """Send dead letters again, to the consumer group that failed them (through the outbox)."""
    from mercato.messaging.dead_letters import replay_dead_letters
    from mercato.serving import run_event_loop

    if not ids and not replay_all:
        _fail(["say which: --id N (repeatable) or --all"])
    settings, services = _databases(config, service)

    async def replay() -> tuple[int, set[int]]:
        total, replayed_ids = 0, set()
        for name in services:
            database = _open_database(settings, name)
            try:
                if ids is None:
                    total += await replay_dead_letters(database, consumer=consumer)
                    continue
                for one in dict.fromkeys(ids):  # one by one, to know which were found
                    if await replay_dead_letters(database, ids=[one], consumer=consumer):
                        total += 1
                        replayed_ids.add(one)
            finally:
                await database.dispose()
        return total, replayed_ids

    count, replayed_ids = run_event_loop(replay())
    typer.echo(f"replayed {count} dead letter(s); the services' relays send them")
    if missing := [one for one in dict.fromkeys(ids or []) if one not in replayed_ids]:
        where = f" in {service}" if service else ""
        _fail(
            [
                f"no pending dead letter #{one}{where}"
                f"{' for ' + consumer if consumer else ''} (see `mercato events dlq list`)"
                for one in missing
            ],
            code=1,
        )


def _open_database(settings: Settings, service: ServiceName) -> Any:
    from mercato.platform.db import Database

    return Database(settings.database_url_for(service), schema=service)


def _letter_dict(letter: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(letter)


@app.command()
def migrate(
    config: ConfigOption = None,
    service: Annotated[
        str | None, typer.Option(help="Only this service (default: every service).")
    ] = None,
) -> None:
    """Apply the database migrations of every service (or one)."""
    from mercato.platform.startup import DependencyRefused
    from mercato.serving import migrate as apply
    from mercato.serving import run_event_loop

    services = [_backend_service(service)] if service else list(BACKEND_SERVICES)
    settings = _settings(config, services=services)
    _configure_logging(settings, "mercato")
    _wait_for_dependencies(settings, services)
    try:
        run_event_loop(apply(settings, services))
    except DependencyRefused as exc:
        _fail([str(exc)], code=1)
    typer.echo(f"Migrated: {', '.join(services)}")


@app.command()
def seed(config: ConfigOption = None) -> None:
    """Load the demo catalogue (120 products in eight categories); safe to run again."""
    from sqlalchemy.exc import DBAPIError

    from mercato.platform.startup import database_dependency, refused
    from mercato.products.app import seed_demo
    from mercato.serving import run_event_loop

    settings = _settings(config, services=["products"])
    _configure_logging(settings, "products")
    _wait_for_dependencies(settings, ["products"])
    try:
        added, total = run_event_loop(seed_demo(settings))
    except DBAPIError as exc:
        database = database_dependency(settings, "products")
        if database is None:
            raise
        _fail([str(refused(database, exc))], code=1)
    typer.echo(f"Seeded {added} demo products; the catalogue holds {total}.")


@app.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Argument(help="3..50 letters and digits.")],
    email: Annotated[str | None, typer.Option(help="The administrator's e-mail.")] = None,
    config: ConfigOption = None,
) -> None:
    """Create an administrator, or give an existing user the admin role. The password is
    prompted for (twice, hidden); it is never taken from the command line."""
    from mercato.auth.app import create_admin as ensure
    from mercato.auth.domain import password_problem, username_problem
    from mercato.serving import run_event_loop

    if problem := username_problem(username):
        _fail([f"the username {problem}"])
    settings = _settings(config, services=["auth"])
    _configure_logging(settings, "auth")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if problem := password_problem(password):
        _fail([f"the password {problem}"])
    try:
        user_id, created = run_event_loop(ensure(settings, username, password, email=email))
    except ValueError as exc:
        _fail([str(exc)])
    typer.echo(f"{'Created' if created else 'Promoted'} administrator {username} ({user_id})")


@app.command()
def status(
    config: ConfigOption = None,
    url: Annotated[
        list[str] | None, typer.Option(metavar="NAME=URL", help="Also scrape URL as NAME.")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between scrapes.")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="One frame; exit 1 if one is down.")] = False,
) -> None:
    """Show every service's figures, live, from its /metrics."""
    from mercato.status import run_command

    raise typer.Exit(run_command(_settings(config, check=False), url or [], interval, once))


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print every effective setting, where it came from, with secrets masked."""
    settings = _settings(config, check=False)
    sources = setting_sources(config)
    derived = derived_values(settings)
    rows: dict[str, dict[str, Any]] = {}
    for name, field in Settings.model_fields.items():
        value, source = getattr(settings, name), sources[name]
        if value is None and name in derived:
            value, source = derived[name], "derived"
        rows[env_name(name, field)] = {"value": masked_value(name, value), "source": source}
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    width = max(len(name) for name in rows)
    for name, row in rows.items():
        value = row["value"]
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        typer.echo(f"{name:<{width}}  {shown!s:<40}  ({row['source']})")


@config_app.command("docs")
def config_docs(
    env: Annotated[bool, typer.Option("--env", help="Print .env.example instead.")] = False,
    readme: Annotated[bool, typer.Option("--readme", help="Print README's table.")] = False,
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="Rewrite docs/configuration.md, .env.example and README.md's table in the"
            " checkout in the working directory.",
        ),
    ] = False,
) -> None:
    """Print the configuration reference (docs/configuration.md), .env.example, or the
    README's configuration table."""
    from mercato.config_docs import (
        configuration_markdown,
        env_example,
        readme_table,
        write_references,
    )

    if write:
        changed = write_references(Path.cwd())
        typer.echo(f"rewrote {', '.join(map(str, changed))}" if changed else "up to date")
        return
    text = env_example() if env else readme_table() if readme else configuration_markdown()
    typer.echo(text, nl=False)


@app.command("api-docs")
def api_docs(
    write: Annotated[
        bool,
        typer.Option(
            "--write", help="Rewrite the generated blocks of docs/api.md in the working directory."
        ),
    ] = False,
) -> None:
    """Print the endpoint tables of the API reference, generated from the services' OpenAPI
    schemas (docs/api.md carries them between markers)."""
    from mercato import api_reference

    if write:
        path = Path.cwd() / "docs" / "api.md"
        typer.echo(f"rewrote {path}" if api_reference.write(path) else "up to date")
        return
    for service in BACKEND_SERVICES:
        typer.echo(api_reference.endpoints_markdown(service))


@config_app.command("check")
def config_check(
    config: ConfigOption = None,
    service: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SERVICE",
            help="Check for these services only (repeatable; default: all of them).",
        ),
    ] = None,
) -> None:
    """Validate the configuration as start-up does; exit 2 with one line per problem."""
    services = [_service(name) for name in service] if service else list(SERVICES)
    settings = _settings(config, services=services)
    typer.echo(f"configuration ok ({settings.environment})")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - Ctrl-C during start-up
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
