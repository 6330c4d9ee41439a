"""Settings from the environment: one typed object, validated once at start-up."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_INSTANCE_DIR = Path("instance")
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


class ConfigError(Exception):
    """Raised when an environment variable holds an invalid value; the message names the variable."""


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    """Everything Cobrabot reads from its environment. All optional for the embedded demo."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    database_url: str = Field("", validation_alias=_env("COBRABOT_DATABASE_URL"))
    redis_url: str | None = Field(None, validation_alias=_env("COBRABOT_REDIS_URL"))
    secret_key: str = Field("dev-insecure-secret-change-me", validation_alias=_env("COBRABOT_SECRET_KEY"))
    public_url: str = Field(DEFAULT_PUBLIC_URL, validation_alias=_env("COBRABOT_PUBLIC_URL"))
    api_token: str | None = Field(None, validation_alias=_env("COBRABOT_API_TOKEN"))
    portal_link_days: int = Field(30, ge=1, le=365, validation_alias=_env("COBRABOT_PORTAL_LINK_DAYS"))
    default_locale: str = Field("es", validation_alias=_env("COBRABOT_DEFAULT_LOCALE"))
    default_timezone: str = Field("America/Santiago", validation_alias=_env("COBRABOT_DEFAULT_TIMEZONE"))
    knowledge_dir: Path | None = Field(None, validation_alias=_env("COBRABOT_KNOWLEDGE_DIR"))
    api_rate_limit: str = Field(
        "1200/minute", validation_alias=_env("COBRABOT_API_RATE_LIMIT"), description="per API token (Flask-Limiter)"
    )
    login_rate_limit: str = Field(
        "10/minute", validation_alias=_env("COBRABOT_LOGIN_RATE_LIMIT"), description="sign-in, per IP and per email"
    )
    inbound_queue: bool = Field(
        False,
        validation_alias=_env("COBRABOT_INBOUND_QUEUE"),
        description="webhooks store messages and answer; `cobrabot inbox-worker` runs the conversations",
    )

    twilio_account_sid: str | None = Field(None, validation_alias=_env("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: str | None = Field(None, validation_alias=_env("TWILIO_AUTH_TOKEN"))
    twilio_sms_from: str | None = Field(None, validation_alias=_env("COBRABOT_TWILIO_SMS_FROM"))
    twilio_whatsapp_from: str | None = Field(None, validation_alias=_env("COBRABOT_TWILIO_WHATSAPP_FROM"))
    twilio_api_url: str | None = Field(None, validation_alias=_env("COBRABOT_TWILIO_API_URL"))
    whatsapp_templates: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        validation_alias=_env("COBRABOT_WHATSAPP_TEMPLATES"),
        description='JSON: {"template_key": {"es": "HX...", "en": "HX..."}} approved ContentSids',
    )

    telegram_bot_token: str | None = Field(None, validation_alias=_env("TELEGRAM_BOT_TOKEN"))
    telegram_secret: str | None = Field(None, validation_alias=_env("COBRABOT_TELEGRAM_SECRET"))
    telegram_api_url: str | None = Field(None, validation_alias=_env("COBRABOT_TELEGRAM_API_URL"))

    smtp_url: str | None = Field(None, validation_alias=_env("COBRABOT_SMTP_URL"))
    email_from: str | None = Field(None, validation_alias=_env("COBRABOT_EMAIL_FROM"))
    email_webhook_secret: str | None = Field(None, validation_alias=_env("COBRABOT_EMAIL_WEBHOOK_SECRET"))
    imap_url: str | None = Field(None, validation_alias=_env("COBRABOT_IMAP_URL"))

    openai_api_key: str | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    llm_model: str = Field("gpt-4o-mini", validation_alias=_env("COBRABOT_LLM_MODEL"))
    llm_timeout_seconds: float = Field(4.0, gt=0, le=60, validation_alias=_env("COBRABOT_LLM_TIMEOUT_SECONDS"))
    llm_rephrase: bool = Field(False, validation_alias=_env("COBRABOT_LLM_REPHRASE"))

    stripe_api_key: str | None = Field(None, validation_alias=_env("STRIPE_API_KEY"))
    stripe_webhook_secret: str | None = Field(None, validation_alias=_env("STRIPE_WEBHOOK_SECRET"))
    sandbox_payments: bool = Field(
        False,
        validation_alias=_env("COBRABOT_SANDBOX_PAYMENTS"),
        description="the portal's Pay button settles invoices with no money moving (demo only)",
    )
    stripe_api_url: str | None = Field(None, validation_alias=_env("COBRABOT_STRIPE_API_URL"))
    mercadopago_access_token: str | None = Field(None, validation_alias=_env("COBRABOT_MERCADOPAGO_ACCESS_TOKEN"))
    mercadopago_webhook_secret: str | None = Field(None, validation_alias=_env("COBRABOT_MERCADOPAGO_WEBHOOK_SECRET"))
    mercadopago_api_url: str | None = Field(None, validation_alias=_env("COBRABOT_MERCADOPAGO_API_URL"))

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value:
            return f"sqlite:///{(DEFAULT_INSTANCE_DIR / 'cobrabot.db').resolve()}"
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if not scheme.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        if scheme == "postgresql":
            # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value and urlparse(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value or None

    @field_validator("api_rate_limit", "login_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError("must be a rate like 10/minute or 100 per hour") from None
        return value

    @field_validator("public_url", mode="before")
    @classmethod
    def _public_url_default(cls, value: object) -> object:
        return value or DEFAULT_PUBLIC_URL

    @field_validator("public_url", "twilio_api_url", "telegram_api_url", "stripe_api_url", "mercadopago_api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parsed = urlparse(value)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise ValueError("must be an absolute http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("imap_url")
    @classmethod
    def _imap_url(cls, value: str | None) -> str | None:
        if value and urlparse(value).scheme not in {"imap", "imaps"}:
            raise ValueError("must be an imap:// or imaps:// URL, e.g. imaps://user:pass@imap.example.com")
        return value or None

    @field_validator("knowledge_dir")
    @classmethod
    def _knowledge_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if value and urlparse(value).scheme not in {"smtp", "smtps"}:
            raise ValueError("must be an smtp:// or smtps:// URL, e.g. smtp://user:pass@host:587")
        return value or None

    @field_validator("default_locale")
    @classmethod
    def _locale(cls, value: str) -> str:
        try:
            Locale.parse(value.replace("-", "_"))
        except (UnknownLocaleError, ValueError) as exc:
            raise ValueError(f"unknown locale {value!r}") from exc
        return value

    @field_validator("default_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @property
    def llm_enabled(self) -> bool:
        """Configuration alone switches the LLM understanding path on: a key and a model name."""
        return bool(self.openai_api_key and self.llm_model.strip())

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def channel_status(self) -> dict[str, str | None]:
        """Each channel mapped to None when usable, or to the reason it is disabled."""
        twilio = None
        if not (self.twilio_account_sid and self.twilio_auth_token):
            twilio = "TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN unset"
        return {
            "sms": twilio or (None if self.twilio_sms_from else "COBRABOT_TWILIO_SMS_FROM unset"),
            "whatsapp": twilio or (None if self.twilio_whatsapp_from else "COBRABOT_TWILIO_WHATSAPP_FROM unset"),
            "telegram": None
            if self.telegram_bot_token and self.telegram_secret
            else "TELEGRAM_BOT_TOKEN/COBRABOT_TELEGRAM_SECRET unset",
            "email": None if self.smtp_url and self.email_from else "COBRABOT_SMTP_URL/COBRABOT_EMAIL_FROM unset",
            "webchat": None,
        }

    def enabled_channels(self) -> list[str]:
        return [name for name, reason in self.channel_status().items() if reason is None]


def load_settings(**overrides: object) -> Settings:
    """Read the environment (plus explicit overrides) or raise ConfigError naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    aliases = {name: _alias_of(name) for name in Settings.model_fields}
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{aliases.get(field, field)}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _alias_of(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field
