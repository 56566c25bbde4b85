"""Settings: one typed object read from the environment (and `.env`) at start-up, never at import time."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

PROVIDERS = ("bundled", "yahoo", "stooq")
LIVE_DEFAULT = "yahoo"  # then Stooq when STOOQ_API_KEY is set (see market.build_providers)
SWITCH_VALUES = {"1": True, "true": True, "yes": True, "on": True,
                 "0": False, "false": False, "no": False, "off": False}


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


URL_FORM = "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (or postgres://...)"


def database_url(value: str) -> str:
    """A PostgreSQL URL libpq reads, naming its database; the error never repeats the value (it holds a password)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    def refuse(reason: str) -> ConfigError:
        return ConfigError(f"DATABASE_URL: {reason}; set it as {URL_FORM}, or unset it to use SQLite at DATABASE_PATH")

    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in ("postgresql", "postgres"):
        raise refuse(f"the scheme is {scheme + '://'!r}, PostgreSQL's is postgresql://" if scheme else "not a URL")
    try:
        params = conninfo_to_dict(value)
        urlsplit(value).port  # noqa: B018  # a port libpq only rejects at connect time, e.g. :abc or :99999
    except (ProgrammingError, ValueError) as exc:
        reason = str(exc).split(" in URI:", 1)[0].split(":", 1)[0].strip() or "malformed"
        raise refuse(f"not a URL PostgreSQL can read ({reason})") from None
    if not params.get("dbname"):
        raise refuse("no database name after the host")
    return value


@dataclass(frozen=True)
class Zones:
    """Price levels members watch, in traded (split-adjusted) dollars. Defaults are the article's."""

    support: float = 200.0
    entry_low: float = 205.0
    entry_high: float = 220.0
    resistance_low: float = 240.0
    resistance_high: float = 245.0

    def __post_init__(self) -> None:
        if min(self.values()) <= 0:
            raise ConfigError("levels must all be positive")
        if not (
            self.support < self.entry_low <= self.entry_high < self.resistance_low <= self.resistance_high
        ):
            raise ConfigError(
                "levels must satisfy support < entry low <= entry high < resistance low <= resistance high"
            )

    @classmethod
    def parse(cls, text: str) -> Zones:
        """`"200,205-220,240-245"` -> Zones (support, entry zone, resistance zone)."""
        try:
            support, entry, resistance = (part.strip() for part in text.split(","))
            entry_low, entry_high = (float(x) for x in entry.split("-"))
            res_low, res_high = (float(x) for x in resistance.split("-"))
            return cls(float(support), entry_low, entry_high, res_low, res_high)
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"levels {text!r}: expected SUPPORT,ENTRY_LOW-ENTRY_HIGH,RES_LOW-RES_HIGH") from exc

    def values(self) -> tuple[float, float, float, float, float]:
        """The five levels, lowest first."""
        return self.support, self.entry_low, self.entry_high, self.resistance_low, self.resistance_high

    def to_text(self) -> str:
        """The `parse` form: `200,205-220,240-245`."""
        return (f"{self.support:g},{self.entry_low:g}-{self.entry_high:g},"
                f"{self.resistance_low:g}-{self.resistance_high:g}")

    def describe(self) -> str:
        """The levels as members read them: `support 200 · entry 205–220 · resistance 240–245`."""
        return (f"support {self.support:g} · entry {self.entry_low:g}–{self.entry_high:g} · "
                f"resistance {self.resistance_low:g}–{self.resistance_high:g}")


@dataclass(frozen=True)
class Settings:
    discord_token: str | None = field(default=None, repr=False)
    dev_guild_id: int | None = None
    message_content_intent: bool = False
    provider: str = "bundled"
    stooq_api_key: str | None = field(default=None, repr=False)
    database_path: Path = Path("smallcaps.db")
    # PostgreSQL shared by every shard process; when set, it wins and DATABASE_PATH is not used.
    database_url: str | None = field(default=None, repr=False)  # holds a password
    cache_ttl_seconds: int = 900
    http_timeout_seconds: float = 10.0
    # One answer's time on the live sources in all, retries included, before the stale answer goes out. 8 s: the
    # member waits behind a deferred reply, and a hanging provider otherwise costs 3 attempts x the timeout (~32 s).
    fetch_deadline_seconds: float = 8.0
    chart_cache_mb: int = 64  # finished charts kept for identical requests (services.renderer); 0: none
    render_cooldown_seconds: float = 3.0  # one chart per member per this many seconds (cogs.common); 0: no limit
    zones: Zones = field(default_factory=Zones)
    yahoo_base_url: str = "https://query1.finance.yahoo.com"
    stooq_base_url: str = "https://stooq.com"
    fred_base_url: str = "https://fred.stlouisfed.org"
    holdings_url: str = (
        "https://www.ishares.com/us/products/239710/ishares-russell-2000-etf/1467271812596.ajax"
        "?fileType=csv&fileName=IWM_holdings&dataType=fund"
    )
    valuation_file: Path | None = None
    aaii_file: Path | None = None  # an operator's CSV copy of AAII's weekly survey (AAII blocks scripted downloads)
    aaii_url: str | None = None  # the same, served over HTTP; read in live mode, the bundled survey as fallback
    log_level: str = "INFO"
    log_retention_days: int = 365
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None

    def database_location(self) -> str:
        """Where state lives, safe to show members: the SQLite file's name (no directory), or PostgreSQL's host and
        database (no user, no password; a unix socket as "local socket")."""
        if self.database_url is None:
            return f"SQLite {self.database_path.name}"
        from psycopg.conninfo import conninfo_to_dict

        conninfo = conninfo_to_dict(self.database_url)
        host, port = str(conninfo.get("host") or ""), conninfo.get("port")
        where = "local socket" if not host or host.startswith("/") else host + (f":{port}" if port else "")
        return f"PostgreSQL {where}/{conninfo['dbname']}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, live_by_default: bool = False) -> Settings:
        """`live_by_default`: the bot on Discord (`bot.py run`) uses the live providers unless
        MARKET_DATA_PROVIDER says otherwise; the console and the tests stay on bundled data."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def integer(name: str, default: int | None) -> int | None:
            value = get(name)
            if value is None:
                return default
            try:
                return int(value)
            except ValueError as exc:
                raise ConfigError(f"{name}={value!r} is not a whole number") from exc

        def number(name: str, default: float) -> float:
            value = get(name)
            try:
                return default if value is None else float(value)
            except ValueError as exc:
                raise ConfigError(f"{name}={value!r} is not a number") from exc

        def at_least(name: str, default: int, low: int, unit: str) -> int:
            if (value := integer(name, None)) is None:
                return default
            if value < low:
                raise ConfigError(f"{name}={value}: set a whole number of {unit}, {low} or more (default {default})")
            return value

        def existing_file(name: str) -> Path | None:
            value = get(name)
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"{name}={value!r}: no such file; give the path of an existing file or unset it")
            return None if value is None else Path(value)

        def switch(name: str) -> bool:
            value = (get(name) or "0").lower()
            if value not in SWITCH_VALUES:
                raise ConfigError(f"{name}={value!r}: set 1/true/yes/on or 0/false/no/off")
            return SWITCH_VALUES[value]

        provider = (get("MARKET_DATA_PROVIDER") or (LIVE_DEFAULT if live_by_default else cls.provider)).lower()
        if provider not in PROVIDERS:
            raise ConfigError(f"MARKET_DATA_PROVIDER={provider!r}: choose one of {', '.join(PROVIDERS)}")
        if provider == "stooq" and not get("STOOQ_API_KEY"):
            raise ConfigError("MARKET_DATA_PROVIDER=stooq needs STOOQ_API_KEY (Stooq's download needs a key)")
        timeout = number("HTTP_TIMEOUT_SECONDS", cls.http_timeout_seconds)
        if not (math.isfinite(timeout) and timeout > 0):
            raise ConfigError(f"HTTP_TIMEOUT_SECONDS={timeout}: set a number of seconds above 0, e.g. 10 (the default)")
        deadline = number("FETCH_DEADLINE_SECONDS", cls.fetch_deadline_seconds)
        if not (math.isfinite(deadline) and deadline > 0):
            raise ConfigError(f"FETCH_DEADLINE_SECONDS={deadline}: set a number of seconds above 0, e.g. 8 (default)")
        cooldown = number("RENDER_COOLDOWN_SECONDS", cls.render_cooldown_seconds)
        if not (math.isfinite(cooldown) and cooldown >= 0):
            raise ConfigError(f"RENDER_COOLDOWN_SECONDS={cooldown}: set a number of seconds, 0 or more, e.g. 3 "
                              "(the default; 0: no limit)")
        shard_count = integer("SHARD_COUNT", None)
        if shard_count is not None and shard_count < 1:
            raise ConfigError(f"SHARD_COUNT={shard_count}: set the total number of shards, 1 or more")
        shard_ids = get("SHARD_IDS")
        if shard_ids and not all(x.strip().isdigit() for x in shard_ids.split(",")):
            raise ConfigError(f"SHARD_IDS={shard_ids!r}: expected comma-separated shard numbers, e.g. 0,1")
        ids = tuple(int(x) for x in shard_ids.split(",")) if shard_ids else None
        if ids is not None and shard_count is None:
            raise ConfigError(f"SHARD_IDS={shard_ids!r} needs SHARD_COUNT, the total number of shards (e.g. 4)")
        if ids is not None and shard_count is not None and max(ids) >= shard_count:
            raise ConfigError(f"SHARD_IDS={shard_ids!r}: shard numbers run from 0 to SHARD_COUNT-1 ({shard_count - 1})")
        return cls(
            discord_token=get("DISCORD_TOKEN"),
            dev_guild_id=integer("DEV_GUILD_ID", None),
            message_content_intent=switch("MESSAGE_CONTENT_INTENT"),
            provider=provider,
            stooq_api_key=get("STOOQ_API_KEY"),
            database_path=Path(get("DATABASE_PATH") or cls.database_path),
            database_url=database_url(url) if (url := get("DATABASE_URL")) else None,
            cache_ttl_seconds=at_least("CACHE_TTL_SECONDS", cls.cache_ttl_seconds, 0, "seconds"),  # 0: no caching
            http_timeout_seconds=timeout,
            fetch_deadline_seconds=deadline,
            render_cooldown_seconds=cooldown,
            chart_cache_mb=at_least("CHART_CACHE_MB", cls.chart_cache_mb, 0, "megabytes"),  # 0: no chart cache
            zones=Zones.parse(levels) if (levels := get("LEVELS")) else Zones(),
            yahoo_base_url=get("YAHOO_BASE_URL") or cls.yahoo_base_url,
            stooq_base_url=get("STOOQ_BASE_URL") or cls.stooq_base_url,
            fred_base_url=get("FRED_BASE_URL") or cls.fred_base_url,
            holdings_url=get("IWM_HOLDINGS_URL") or cls.holdings_url,
            valuation_file=existing_file("VALUATION_FILE"),
            aaii_file=existing_file("AAII_FILE"),
            aaii_url=get("AAII_URL"),
            log_level=(get("LOG_LEVEL") or cls.log_level).upper(),
            log_retention_days=at_least("LOG_RETENTION_DAYS", cls.log_retention_days, 1, "days"),
            shard_count=shard_count,
            shard_ids=ids,
        )
