"""Settings from the environment: defaults, validation naming the variable, channel status."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, load_settings

# Every variable Settings reads, so a test starts from a truly empty environment.
OWN_PREFIXES = ("COBRABOT_", "TWILIO_", "TELEGRAM_", "STRIPE_", "OPENAI_")

TWILIO = {"TWILIO_ACCOUNT_SID": "AC123", "TWILIO_AUTH_TOKEN": "secret-token"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An environment without any Cobrabot variable, in an empty working directory."""
    for name in list(os.environ):
        if name.startswith(OWN_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def settings_with(env: pytest.MonkeyPatch, **variables: str) -> Settings:
    for name, value in variables.items():
        env.setenv(name, value)
    return load_settings()


def test_empty_environment_gives_a_working_embedded_setup(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{tmp_path.resolve() / 'instance' / 'cobrabot.db'}"
    assert settings.is_sqlite
    assert settings.redis_url is None
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.portal_link_days == 30
    assert (settings.default_locale, settings.default_timezone) == ("es", "America/Santiago")
    assert settings.enabled_channels() == ["webchat"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("COBRABOT_PUBLIC_URL", "ftp://x"),
        ("COBRABOT_PUBLIC_URL", "not a url"),
        ("COBRABOT_DATABASE_URL", "mysql://user@db/cobrabot"),
        ("COBRABOT_DEFAULT_TIMEZONE", "Mars/Base"),
        ("COBRABOT_DEFAULT_LOCALE", "xx-YY"),
        ("COBRABOT_DEFAULT_LOCALE", "xx-YY?"),
        ("COBRABOT_PORTAL_LINK_DAYS", "0"),
        ("COBRABOT_PORTAL_LINK_DAYS", "366"),
        ("COBRABOT_PORTAL_LINK_DAYS", "a month"),
        ("COBRABOT_REDIS_URL", "http://x"),
        ("COBRABOT_SMTP_URL", "http://x"),
        ("COBRABOT_TWILIO_API_URL", "localhost:8080"),
    ],
)
def test_invalid_value_raises_config_error_naming_the_variable(
    env: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    env.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert f"{variable}:" in str(raised.value)


def test_every_invalid_variable_is_reported_at_once(env: pytest.MonkeyPatch) -> None:
    bad = {"COBRABOT_PUBLIC_URL": "ftp://x", "COBRABOT_REDIS_URL": "http://x", "COBRABOT_PORTAL_LINK_DAYS": "0"}
    with pytest.raises(ConfigError) as raised:
        settings_with(env, **bad)
    assert all(name in str(raised.value) for name in bad)


def test_config_error_does_not_echo_the_secret_inside_a_bad_url(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_with(env, COBRABOT_DATABASE_URL="mysql://app:s3cr3t-pw@db/cobrabot")
    assert "s3cr3t-pw" not in str(raised.value)


def test_explicit_overrides_are_validated_too(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="COBRABOT_PORTAL_LINK_DAYS"):
        load_settings(portal_link_days=0)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://app:pw@db:5432/cobrabot", "postgresql+psycopg://app:pw@db:5432/cobrabot"),
        ("postgresql+psycopg://app@db/cobrabot", "postgresql+psycopg://app@db/cobrabot"),
        ("sqlite:////var/lib/cobrabot/cobrabot.db", "sqlite:////var/lib/cobrabot/cobrabot.db"),
    ],
)
def test_database_url_uses_the_shipped_postgres_driver(env: pytest.MonkeyPatch, given: str, expected: str) -> None:
    settings = settings_with(env, COBRABOT_DATABASE_URL=given)
    assert settings.database_url == expected
    assert settings.is_sqlite == expected.startswith("sqlite")


def test_urls_lose_their_trailing_slash_and_empty_optionals_mean_unset(env: pytest.MonkeyPatch) -> None:
    settings = settings_with(
        env, COBRABOT_PUBLIC_URL="https://cobra.example/", COBRABOT_REDIS_URL="", COBRABOT_SMTP_URL=""
    )
    assert settings.public_url == "https://cobra.example"
    assert (settings.redis_url, settings.smtp_url) == (None, None)


def test_empty_public_url_means_the_default(env: pytest.MonkeyPatch) -> None:
    assert settings_with(env, COBRABOT_PUBLIC_URL="").public_url == "http://127.0.0.1:8000"


def test_channels_without_credentials_are_disabled_with_the_missing_variable(env: pytest.MonkeyPatch) -> None:
    status = load_settings().channel_status()
    assert status["webchat"] is None
    assert "TWILIO_ACCOUNT_SID" in (status["sms"] or "")
    assert "TWILIO_ACCOUNT_SID" in (status["whatsapp"] or "")
    assert "TELEGRAM_BOT_TOKEN" in (status["telegram"] or "")
    assert "COBRABOT_SMTP_URL" in (status["email"] or "")


def test_telegram_without_a_webhook_secret_stays_disabled(env: pytest.MonkeyPatch) -> None:
    # The webhook must never run unauthenticated, so the token alone does not enable the channel.
    settings = settings_with(env, TELEGRAM_BOT_TOKEN="123:abc")
    assert "COBRABOT_TELEGRAM_SECRET" in (settings.channel_status()["telegram"] or "")


@pytest.mark.parametrize(
    ("channel", "variables"),
    [
        ("sms", {**TWILIO, "COBRABOT_TWILIO_SMS_FROM": "+15005550006"}),
        ("whatsapp", {**TWILIO, "COBRABOT_TWILIO_WHATSAPP_FROM": "whatsapp:+14155238886"}),
        ("telegram", {"TELEGRAM_BOT_TOKEN": "123:abc", "COBRABOT_TELEGRAM_SECRET": "s3cret"}),
        ("email", {"COBRABOT_SMTP_URL": "smtp://mail:587", "COBRABOT_EMAIL_FROM": "cobranza@example.cl"}),
    ],
)
def test_a_channel_is_enabled_once_its_credentials_are_set(
    env: pytest.MonkeyPatch, channel: str, variables: dict[str, str]
) -> None:
    settings = settings_with(env, **variables)
    assert settings.channel_status()[channel] is None
    assert sorted(settings.enabled_channels()) == sorted([channel, "webchat"])


@pytest.mark.parametrize(
    ("channel", "variables", "missing"),
    [
        ("sms", TWILIO, "COBRABOT_TWILIO_SMS_FROM"),
        ("sms", {"TWILIO_ACCOUNT_SID": "AC123", "COBRABOT_TWILIO_SMS_FROM": "+15005550006"}, "TWILIO_AUTH_TOKEN"),
        ("email", {"COBRABOT_SMTP_URL": "smtp://mail:587"}, "COBRABOT_EMAIL_FROM"),
    ],
)
def test_partial_credentials_keep_the_channel_disabled(
    env: pytest.MonkeyPatch, channel: str, variables: dict[str, str], missing: str
) -> None:
    reason = settings_with(env, **variables).channel_status()[channel]
    assert reason is not None
    assert missing in reason
