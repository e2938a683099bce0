"""Settings: every source in its place, every format, the profiles, production refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mercato.cli import app as cli
from mercato.platform.security.keys import SigningKey
from mercato.platform.settings import INSECURE_SECRET_KEY, ConfigError, SharedSettings
from mercato.platform.settings_sources import MASK, env_name, load, mask_url
from mercato.settings import Settings, env_file_warnings, load_settings, setting_sources

STRONG_KEY = "k" * 48
SIGNING_KEY = SigningKey.generate().to_pem()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the machine: no env var, no .env, no secrets dir."""
    for name in [*Settings.model_fields, "MERCATO_CONFIG", "SECRETS_DIR"]:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path / "no-secrets"))
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


CONFIG_FORMATS = {
    "yaml": "mercato:\n  port: 9100\n  log_format: json\n  cors_origins: [https://a.example]\n",
    "json": json.dumps({"port": 9100, "log_format": "json", "cors_origins": "https://a.example"}),
    "toml": '[mercato]\nport = 9100\nlog_format = "json"\ncors_origins = ["https://a.example"]\n',
    "ini": "[mercato]\nport = 9100\nlog_format = json\ncors_origins = https://a.example\n",
}


class TestDefaultsAndProfiles:
    def test_development_runs_on_embedded_defaults(self) -> None:
        settings = load_settings(env_file=None)

        assert settings.environment == "development"
        assert settings.port == 8000
        assert settings.database_url_for("orders") == "sqlite+aiosqlite:///var/orders.db"
        assert settings.redis_url is None
        assert settings.broker_url is None
        assert settings.log_format == "console"
        assert settings.problems() == []

    def test_testing_uses_in_memory_sqlite(self) -> None:
        settings = load_settings(env_file=None, environment="testing")

        assert settings.database_url_for("products") == "sqlite+aiosqlite:///:memory:"

    def test_production_has_no_insecure_default(self) -> None:
        settings = load_settings(env_file=None, environment="production")

        assert settings.secret_key is None
        assert settings.allowed_hosts == []
        assert settings.log_format == "json"
        assert settings.docs_enabled is False
        assert settings.auto_migrate is False

    def test_an_explicit_value_beats_the_profile(self) -> None:
        settings = load_settings(env_file=None, environment="production", log_format="console")

        assert settings.log_format == "console"

    def test_a_context_adds_its_own_profile_to_the_kernels(self) -> None:
        testing = load_settings(env_file=None, environment="testing")
        production = load_settings(env_file=None, environment="production")

        assert (testing.argon2_time_cost, testing.log_level) == (1, "WARNING")  # auth, kernel
        assert (production.argon2_time_cost, production.log_level) == (2, None)

    def test_the_kernel_loads_without_any_context(self) -> None:
        shared = load(SharedSettings, env_file=None, environment="testing")

        assert shared.database_url_for("anything") == "sqlite+aiosqlite:///:memory:"
        assert "products_cache_ttl" not in SharedSettings.model_fields
        with pytest.raises(TypeError, match="not the whole Settings"):
            Settings.of(shared)
        assert Settings.of(load_settings(env_file=None)).products_cache_ttl == 300.0


class TestPrecedence:
    """explicit > environment > .env > config file > secrets dir > defaults."""

    @pytest.fixture
    def every_source(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
        secrets = tmp_path / "secrets"
        for name in ("port", "auth_port", "users_port", "products_port", "orders_port"):
            write(secrets / name, "9005")
        monkeypatch.setenv("SECRETS_DIR", str(secrets))
        config = write(
            tmp_path / "mercato.yaml",
            "port: 9004\nauth_port: 9004\nusers_port: 9004\nproducts_port: 9004\n",
        )
        write(tmp_path / ".env", "PORT=9003\nAUTH_PORT=9003\nUSERS_PORT=9003\n")
        monkeypatch.setenv("PORT", "9002")
        monkeypatch.setenv("AUTH_PORT", "9002")
        return config

    def test_each_source_wins_over_the_ones_below_it(self, every_source: Path) -> None:
        settings = load_settings(every_source, port=9001)

        assert settings.port == 9001  # explicit
        assert settings.auth_port == 9002  # environment
        assert settings.users_port == 9003  # .env
        assert settings.products_port == 9004  # config file
        assert settings.orders_port == 9005  # secrets dir

    def test_sources_are_named_for_config_show(self, every_source: Path) -> None:
        sources = setting_sources(every_source)

        assert sources["auth_port"] == "environment"
        assert sources["users_port"] == ".env"
        assert sources["products_port"] == f"config file {every_source}"
        assert sources["orders_port"].startswith("secrets dir")
        assert sources["debug"] == "default"
        assert sources["log_format"] == "development profile"

    def test_config_file_named_by_mercato_config(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("MERCATO_CONFIG", str(write(tmp_path / "c.toml", "port = 9444\n")))

        assert load_settings(env_file=None).port == 9444

    def test_per_service_database_url_wins_over_the_shared_one(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://db/shared")
        monkeypatch.setenv("ORDERS_DATABASE_URL", "postgresql+asyncpg://db/orders")
        settings = load_settings(env_file=None)

        assert settings.database_url_for("orders") == "postgresql+asyncpg://db/orders"
        assert settings.database_url_for("users") == "postgresql+asyncpg://db/shared"

    def test_service_urls_follow_their_ports_unless_set(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("PRODUCTS_PORT", "9103")
        monkeypatch.setenv("USERS_URL", "http://users.internal:80/")
        settings = load_settings(env_file=None, host="0.0.0.0")

        assert settings.service_url("products") == "http://127.0.0.1:9103"
        assert settings.service_url("users") == "http://users.internal:80"

    def test_several_instances_of_a_service(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PRODUCTS_URL", "http://p1:8003, http://p2:8003/")
        settings = load_settings(env_file=None)

        assert settings.service_urls("products") == ["http://p1:8003", "http://p2:8003"]
        assert settings.service_url("products") == "http://p1:8003"

    def test_comma_separated_lists(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
        monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1")
        settings = load_settings(env_file=None)

        assert settings.cors_origins == ["https://a.example", "https://b.example"]
        assert settings.trusted_proxies == ["10.0.0.0/8", "127.0.0.1"]


class TestConfigFiles:
    @pytest.mark.parametrize("suffix", sorted(CONFIG_FORMATS))
    def test_every_format_is_read(self, tmp_path: Path, suffix: str) -> None:
        path = write(tmp_path / f"mercato.{suffix}", CONFIG_FORMATS[suffix])
        settings = load_settings(path, env_file=None)

        assert settings.port == 9100
        assert settings.log_format == "json"
        assert settings.cors_origins == ["https://a.example"]

    def test_a_list_of_instances_is_a_comma_separated_url_setting(self, tmp_path: Path) -> None:
        path = write(tmp_path / "mercato.yaml", "products_url: [http://p1:8003, http://p2:8003]\n")

        assert load_settings(path, env_file=None).service_urls("products") == [
            "http://p1:8003",
            "http://p2:8003",
        ]

    def test_an_unknown_setting_is_an_error_not_a_silent_typo(self, tmp_path: Path) -> None:
        path = write(tmp_path / "mercato.yaml", "prot: 9100\n")

        with pytest.raises(ConfigError, match="unknown setting 'prot'"):
            load_settings(path, env_file=None)

    @pytest.mark.parametrize(
        ("name", "text", "message"),
        [
            ("missing.yaml", None, "does not exist"),
            ("bad.yaml", "port: [", "cannot be parsed"),
            ("bad.json", "{", "cannot be parsed"),
            ("no-section.ini", "[other]\nport = 1\n", r"no \[mercato\] section"),
            ("mercato.xml", "<port/>", "unknown format"),
            ("list.yaml", "- port\n", "must hold a mapping"),
            ("number.json", "5", "must hold a mapping"),
        ],
    )
    def test_unreadable_files_are_reported(
        self, tmp_path: Path, name: str, text: str | None, message: str
    ) -> None:
        path = tmp_path / name
        if text is not None:
            write(path, text)

        with pytest.raises(ConfigError, match=message):
            load_settings(path, env_file=None)

    def test_invalid_values_name_the_setting(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PORT", "99999")

        with pytest.raises(ConfigError) as caught:
            load_settings(env_file=None)

        assert caught.value.problems[0].startswith("PORT:")


class TestProductionRefusals:
    def test_a_sound_production_configuration_passes(self) -> None:
        settings = load_settings(
            env_file=None,
            environment="production",
            secret_key=STRONG_KEY,
            allowed_hosts="shop.example",
            jwt_private_keys=SIGNING_KEY,
        )

        assert settings.problems() == []

    @pytest.mark.parametrize(
        ("overrides", "problem"),
        [
            ({"secret_key": None}, "SECRET_KEY is not set"),
            ({"secret_key": INSECURE_SECRET_KEY}, "development default"),
            ({"secret_key": "short"}, "shorter than 32"),
            ({"debug": True}, "DEBUG=true"),
            ({"allowed_hosts": "*"}, "wildcard"),
            ({"allowed_hosts": "*.example"}, "wildcard"),
            ({"cors_origins": "*"}, "CORS_ORIGINS"),
        ],
    )
    def test_each_insecure_setting_is_one_problem(
        self, overrides: dict[str, object], problem: str
    ) -> None:
        base: dict[str, object] = {
            "secret_key": STRONG_KEY,
            "allowed_hosts": "shop.example",
            "jwt_private_keys": SIGNING_KEY,
        }
        settings = load_settings(env_file=None, environment="production", **(base | overrides))

        problems = settings.problems()
        assert len(problems) == 1
        assert problem in problems[0]
        with pytest.raises(ConfigError):
            settings.check()

    def test_the_command_line_refuses_with_exit_code_2_and_never_prints_the_secret(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("ENVIRONMENT", "production")
        monkeypatch.setenv("SECRET_KEY", "tiny-secret")
        monkeypatch.setenv("DEBUG", "true")

        result = CliRunner().invoke(cli, ["config", "check"])

        assert result.exit_code == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 4  # short key, DEBUG, no ALLOWED_HOSTS, no JWT keys: one line each
        assert "tiny-secret" not in result.output + result.stderr

    def test_up_refuses_in_production_without_a_secret_key(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("ENVIRONMENT", "production")
        monkeypatch.setenv("ALLOWED_HOSTS", "shop.example")

        result = CliRunner().invoke(cli, ["up"])

        assert result.exit_code == 2
        assert "SECRET_KEY is not set" in result.stderr


class TestConfigShow:
    def test_secrets_are_masked_and_sources_shown(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SECRET_KEY", "super-secret-value-0123456789abcdef")
        monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://app:hunter2@db:5432/shop")

        result = CliRunner().invoke(cli, ["config", "show", "--json"])

        assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)
        assert shown["SECRET_KEY"] == {"value": MASK, "source": "environment"}
        assert shown["DATABASE_URL"]["value"] == f"postgresql+asyncpg://app:{MASK}@db:5432/shop"
        assert shown["ORDERS_URL"] == {"value": "http://127.0.0.1:8002", "source": "derived"}
        assert "super-secret" not in result.stdout
        assert "hunter2" not in result.stdout

    def test_table_output_lists_every_setting_under_the_name_a_user_sets(self) -> None:
        result = CliRunner().invoke(cli, ["config", "show"])

        assert result.exit_code == 0
        names = {line.split()[0] for line in result.stdout.splitlines()}
        assert {env_name(name, field) for name, field in Settings.model_fields.items()} == names
        assert "MERCATO_ADMIN_USERNAME" in names

    @pytest.mark.parametrize("where", ["environment", ".env"])
    def test_an_aliased_setting_shows_its_true_source(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
    ) -> None:
        if where == "environment":
            monkeypatch.setenv("MERCATO_ADMIN_USERNAME", "boss")
        else:
            write(tmp_path / ".env", "MERCATO_ADMIN_USERNAME=boss\n")

        result = CliRunner().invoke(cli, ["config", "show", "--json"])

        assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)
        assert shown["MERCATO_ADMIN_USERNAME"] == {"value": "boss", "source": where}
        assert "admin_username" not in shown
        assert "warning" not in result.stderr


class TestStartUpRefusals:
    """What start-up would refuse, `config check` refuses first: one line naming the
    setting, exit 2, no traceback."""

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("DATABASE_URL", "garbage"),
            ("DATABASE_URL", "mysql://db/shop"),
            ("DATABASE_URL", "postgresql+psycopg2://db/shop"),
            ("DATABASE_URL", "postgresql://db:notaport/shop"),
            ("DATABASE_URL", "postgresql:///shop"),
            ("ORDERS_DATABASE_URL", "garbage"),
            ("LOG_ROTATE", "weekly"),
            ("REDIS_URL", "localhost:6379"),
            ("REDIS_URL", "http://cache:6379"),
            ("BROKER_URL", "rabbit://mq"),
            ("BROKER_URL", "amqp://"),
            ("SMTP_URL", "mail.example:25"),
            ("AUTH_URL", "auth.internal:8004"),
            ("PRODUCTS_URL", "http://p1:8003, p2:8003"),
            ("JWKS_URL", "ftp://auth/jwks.json"),
        ],
    )
    def test_each_unusable_value_is_one_line_naming_the_setting(
        self, monkeypatch: pytest.MonkeyPatch, name: str, value: str
    ) -> None:
        monkeypatch.setenv(name, value)

        result = CliRunner().invoke(cli, ["config", "check"])

        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"mercato: {name}: ")
        assert "Traceback" not in result.output + result.stderr

    def test_a_database_url_never_shows_its_password_in_the_problem(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("DATABASE_URL", "mysql://app:hunter2@db/shop")

        result = CliRunner().invoke(cli, ["config", "check"])

        assert result.exit_code == 2
        assert "hunter2" not in result.stderr

    @pytest.mark.parametrize(
        ("url", "effective"),
        [
            ("postgres://app:pw@db:5432/shop", "postgresql+asyncpg://app:pw@db:5432/shop"),
            ("postgresql://app@db/shop", "postgresql+asyncpg://app@db/shop"),
            ("postgresql+asyncpg://db/shop", "postgresql+asyncpg://db/shop"),
            ("sqlite:///var/shop.db", "sqlite+aiosqlite:///var/shop.db"),
            (
                "postgres://app:p%40ss@db/shop?sslmode=require",
                "postgresql+asyncpg://app:p%40ss@db/shop?ssl=require",
            ),
        ],
    )
    def test_urls_without_the_async_driver_are_given_it(
        self, monkeypatch: pytest.MonkeyPatch, url: str, effective: str
    ) -> None:
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("USERS_DATABASE_URL", url)

        settings = load_settings(env_file=None)

        assert settings.database_url_for("orders") == effective
        assert settings.database_url_for("users") == effective
        assert CliRunner().invoke(cli, ["config", "check"]).exit_code == 0

    def test_an_empty_url_means_unset(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("DATABASE_URL", "REDIS_URL", "BROKER_URL"):
            monkeypatch.setenv(name, "")

        settings = load_settings(env_file=None)

        assert settings.database_url is None
        assert settings.redis_url is None
        assert settings.broker_url is None

    def test_production_needs_jwt_signing_keys_for_the_auth_service(self) -> None:
        base = {"secret_key": STRONG_KEY, "allowed_hosts": "shop.example"}
        settings = load_settings(env_file=None, environment="production", **base)

        assert settings.problems() == [
            "JWT_PRIVATE_KEYS (or JWT_PRIVATE_KEYS_FILE) is not set;"
            " production never generates signing keys"
        ]
        assert settings.problems(["products", "gateway"]) == []

    def test_a_missing_key_file_is_a_problem_in_production(self, tmp_path: Path) -> None:
        settings = load_settings(
            env_file=None,
            environment="production",
            secret_key=STRONG_KEY,
            allowed_hosts="shop.example",
            jwt_private_keys_file=tmp_path / "absent.pem",
        )

        assert settings.problems() == [
            f"JWT_PRIVATE_KEYS_FILE {tmp_path / 'absent.pem'} does not exist"
        ]

    def test_production_with_a_signing_key_passes(self) -> None:
        settings = load_settings(
            env_file=None,
            environment="production",
            secret_key=STRONG_KEY,
            allowed_hosts="shop.example",
            jwt_private_keys=SIGNING_KEY,
        )

        assert settings.problems() == []

    @pytest.mark.parametrize("name", ["JWT_PRIVATE_KEYS", "JWT_PUBLIC_KEYS"])
    def test_unreadable_keys_are_refused_in_every_profile(
        self, monkeypatch: pytest.MonkeyPatch, name: str
    ) -> None:
        monkeypatch.setenv(name, "not a key")

        result = CliRunner().invoke(cli, ["config", "check"])

        assert result.exit_code == 2
        assert result.stderr.startswith(f"mercato: {name}: ")
        assert "not a key" not in result.stderr

    def test_config_check_in_production_without_keys_exits_2(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("ENVIRONMENT", "production")
        monkeypatch.setenv("SECRET_KEY", STRONG_KEY)
        monkeypatch.setenv("ALLOWED_HOSTS", "shop.example")

        everything = CliRunner().invoke(cli, ["config", "check"])
        products_only = CliRunner().invoke(cli, ["config", "check", "--service", "products"])

        assert everything.exit_code == 2
        assert "JWT_PRIVATE_KEYS" in everything.stderr
        assert products_only.exit_code == 0, products_only.stderr

    def test_two_processes_on_one_port_is_a_problem_for_up_only(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("AUTH_PORT", "8000")

        everything = CliRunner().invoke(cli, ["config", "check"])
        auth_only = CliRunner().invoke(cli, ["config", "check", "--service", "auth"])

        assert everything.exit_code == 2
        assert everything.stderr == (
            "mercato: AUTH_PORT and PORT share port 8000; each process needs a port of its own\n"
        )
        assert auth_only.exit_code == 0

    def test_a_log_file_that_cannot_be_opened_is_one_line(self, tmp_path: Path) -> None:
        write(tmp_path / "a-file", "")

        result = CliRunner().invoke(
            cli, ["migrate"], env={"LOG_FILE": str(tmp_path / "a-file" / "mercato.log")}
        )

        assert result.exit_code == 2
        assert result.stderr == (
            f"mercato: LOG_FILE {tmp_path / 'a-file' / 'mercato.log'} cannot be opened:"
            f" File exists ({tmp_path / 'a-file'})\n"
        )


class TestDotEnv:
    def test_an_unknown_name_is_a_warning_with_the_closest_setting(self, tmp_path: Path) -> None:
        write(tmp_path / ".env", "PROT=9000\nPORT=9001\nMERCATO_ADMIN_USERNAME=boss\n")

        result = CliRunner().invoke(cli, ["config", "check"])

        assert result.exit_code == 0
        assert result.stderr.splitlines() == [
            "mercato: warning: PROT (.env): not a setting; did you mean PORT?"
        ]

    def test_a_name_like_no_setting_gets_no_guess(self, tmp_path: Path) -> None:
        write(tmp_path / ".env", "COMPOSE_PROJECT_NAME=shop\n")

        assert env_file_warnings(tmp_path / ".env") == [
            f"COMPOSE_PROJECT_NAME ({tmp_path / '.env'}): not a setting"
        ]

    def test_variables_read_from_the_environment_only_are_named(self, tmp_path: Path) -> None:
        write(tmp_path / ".env", "MERCATO_CONFIG=mercato.yaml\n")

        (line,) = env_file_warnings(".env")

        assert line == "MERCATO_CONFIG (.env): read from the environment only, not from .env"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@cache:6379/0", f"redis://:{MASK}@cache:6379/0"),
        ("amqp://guest:guest@mq/", f"amqp://guest:{MASK}@mq/"),
        ("sqlite+aiosqlite:///var/x.db", "sqlite+aiosqlite:///var/x.db"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked
