"""Settings.from_env: a bad value is one clear line naming the variable and the fix, never a silent default."""

from __future__ import annotations

import pytest

import bot
from services.config import ConfigError, Settings


@pytest.mark.parametrize(("env", "names"), [
    ({"LOG_RETENTION_DAYS": "-5"}, ["LOG_RETENTION_DAYS", "1 or more"]),
    ({"LOG_RETENTION_DAYS": "0"}, ["LOG_RETENTION_DAYS", "1 or more"]),
    ({"LOG_RETENTION_DAYS": "a year"}, ["LOG_RETENTION_DAYS", "whole number"]),
    ({"HTTP_TIMEOUT_SECONDS": "nan"}, ["HTTP_TIMEOUT_SECONDS", "above 0"]),
    ({"HTTP_TIMEOUT_SECONDS": "inf"}, ["HTTP_TIMEOUT_SECONDS", "above 0"]),
    ({"HTTP_TIMEOUT_SECONDS": "0"}, ["HTTP_TIMEOUT_SECONDS", "above 0"]),
    ({"HTTP_TIMEOUT_SECONDS": "-1"}, ["HTTP_TIMEOUT_SECONDS", "above 0"]),
    ({"CACHE_TTL_SECONDS": "-1"}, ["CACHE_TTL_SECONDS", "0 or more"]),
    ({"FETCH_DEADLINE_SECONDS": "nan"}, ["FETCH_DEADLINE_SECONDS", "above 0"]),
    ({"FETCH_DEADLINE_SECONDS": "0"}, ["FETCH_DEADLINE_SECONDS", "above 0"]),
    ({"FETCH_DEADLINE_SECONDS": "-8"}, ["FETCH_DEADLINE_SECONDS", "above 0"]),
    ({"FETCH_DEADLINE_SECONDS": "soon"}, ["FETCH_DEADLINE_SECONDS", "not a number"]),
    ({"SHARD_IDS": "0,1"}, ["SHARD_IDS", "needs SHARD_COUNT"]),
    ({"SHARD_IDS": "2,4", "SHARD_COUNT": "4"}, ["SHARD_IDS", "0 to SHARD_COUNT-1 (3)"]),
    ({"SHARD_COUNT": "0"}, ["SHARD_COUNT", "1 or more"]),
    ({"MESSAGE_CONTENT_INTENT": "enabled"}, ["MESSAGE_CONTENT_INTENT", "1/true/yes/on or 0/false/no/off"]),
    ({"MESSAGE_CONTENT_INTENT": "2"}, ["MESSAGE_CONTENT_INTENT", "1/true/yes/on or 0/false/no/off"]),
    ({"VALUATION_FILE": "no/such/valuation.csv"}, ["VALUATION_FILE", "no such file"]),
    ({"AAII_FILE": "no/such/aaii.csv"}, ["AAII_FILE", "no such file"]),
])
def test_a_bad_setting_is_one_line_naming_it_and_the_fix(env, names):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{names[0]}=") and all(n in message for n in names), message


@pytest.mark.parametrize(("value", "on"), [
    *[(v, True) for v in ("1", "true", "yes", "on", "ON", " True ")],
    *[(v, False) for v in ("0", "false", "no", "off", "Off", "")],
])
def test_message_content_intent_switch(value, on):
    assert Settings.from_env({"MESSAGE_CONTENT_INTENT": value}).message_content_intent is on


def test_good_settings_are_read(tmp_path):
    valuation = tmp_path / "valuation.csv"
    valuation.write_text("date,symbol,metric,value,source,note\n", encoding="utf-8")
    settings = Settings.from_env({"LOG_RETENTION_DAYS": "30", "HTTP_TIMEOUT_SECONDS": "2.5", "CACHE_TTL_SECONDS": "60",
                                  "SHARD_COUNT": "4", "SHARD_IDS": "0,3", "VALUATION_FILE": str(valuation)})
    assert (settings.log_retention_days, settings.http_timeout_seconds, settings.cache_ttl_seconds) == (30, 2.5, 60)
    assert (settings.shard_count, settings.shard_ids, settings.valuation_file) == (4, (0, 3), valuation)
    assert Settings.from_env({"SHARD_COUNT": "2"}).shard_ids is None  # every shard
    defaults = Settings.from_env({})
    assert (defaults.log_retention_days, defaults.http_timeout_seconds, defaults.cache_ttl_seconds) == (365, 10.0, 900)


def test_bot_prints_a_config_error_as_one_line_and_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("LOG_RETENTION_DAYS", "-5")
    assert bot.main(["console", "/iwm levels"]) == 2
    err = capsys.readouterr().err
    assert err == "configuration error: LOG_RETENTION_DAYS=-5: set a whole number of days, 1 or more (default 365)\n"


@pytest.mark.parametrize("url", [
    "postgresql://smallcaps:s3cret@db.example:5433/smallcaps",
    "postgres://smallcaps:s3cret@db.example/smallcaps",
    "postgresql://smallcaps@/smallcaps?host=/run/postgresql",
])
def test_database_url_accepts_postgresql_urls_and_shows_no_password(url):
    settings = Settings.from_env({"DATABASE_URL": url, "DATABASE_PATH": "/srv/smallcaps/state.db"})
    assert settings.database_url == url and "s3cret" not in repr(settings)
    assert settings.database_path.name == "state.db"  # read, but DATABASE_URL wins when both are set


@pytest.mark.parametrize(("url", "reason"), [
    ("mysql://smallcaps:s3cret@db.example/smallcaps", "the scheme is 'mysql://', PostgreSQL's is postgresql://"),
    ("smallcaps.db", "not a URL"),
    ("postgresql://smallcaps:s3cret@db.example:54x2/smallcaps", "not a URL PostgreSQL can read"),
    ("postgresql://smallcaps:s3cret@db.example:99999/smallcaps", "not a URL PostgreSQL can read"),
    ("postgresql://smallcaps:s3cret@[::1/smallcaps", "not a URL PostgreSQL can read"),
    ("postgresql://smallcaps:s3cret@db.example/smallcaps?colour=blue", "not a URL PostgreSQL can read"),
    ("postgresql://smallcaps:s3cret@db.example", "no database name after the host"),
])
def test_a_malformed_database_url_is_one_line_naming_it_and_the_fix_without_the_password(url, reason):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DATABASE_URL": url})
    message = str(caught.value)
    assert message.startswith(f"DATABASE_URL: {reason}") and "\n" not in message and "s3cret" not in message, message
    assert message.endswith("set it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE (or postgres://...), "
                            "or unset it to use SQLite at DATABASE_PATH"), message


def test_database_location_names_no_directory_and_no_password():
    assert Settings.from_env({"DATABASE_PATH": "/srv/smallcaps/state.db"}).database_location() == "SQLite state.db"
    assert Settings().database_location() == "SQLite smallcaps.db"
    assert Settings.from_env({"DATABASE_URL": "postgresql://bot:s3cret@db.example:5433/smallcaps"}
                             ).database_location() == "PostgreSQL db.example:5433/smallcaps"
    assert Settings.from_env({"DATABASE_URL": "postgres://bot:s3cret@db.example/smallcaps"}
                             ).database_location() == "PostgreSQL db.example/smallcaps"
    assert Settings.from_env({"DATABASE_URL": "postgresql://bot@/smallcaps?host=/run/postgresql"}
                             ).database_location() == "PostgreSQL local socket/smallcaps"


@pytest.mark.parametrize("mode", [["console", "/iwm levels"], ["run"]])
def test_an_unreachable_database_url_is_one_line_without_the_password(monkeypatch, tmp_path, capsys, mode):
    """A DATABASE_URL whose server does not answer stops the bot at start-up with one line naming the variable,
    before Discord is reached, and without the password; the SQLite file is never made."""
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot:s3cret@127.0.0.1:9/smallcaps")
    monkeypatch.setenv("DATABASE_PATH", str(tmp_path / "state.db"))
    monkeypatch.setenv("DISCORD_TOKEN", "not-a-token")
    monkeypatch.setenv("MARKET_DATA_PROVIDER", "bundled")
    monkeypatch.setattr(bot, "setup_logging", lambda settings: None)  # leaves the session's root logger alone
    assert bot.main(mode) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot open database postgresql://bot:***@127.0.0.1:9/")
    assert "DATABASE_URL" in err and "s3cret" not in err
    assert not (tmp_path / "state.db").exists()


def test_the_console_keeps_its_state_in_the_database_url(monkeypatch, tmp_path, capsys, postgres):
    """With DATABASE_URL the console answers from PostgreSQL and says the state went there (not to a file)."""
    from tests.support.postgres import schema_url

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MARKET_DATA_PROVIDER", "bundled")
    monkeypatch.setattr(bot, "setup_logging", lambda settings: None)
    with schema_url(postgres) as url:
        monkeypatch.setenv("DATABASE_URL", url)
        assert bot.main(["console", "/iwm setlevels support:151 entry_low:161 entry_high:171 resistance_low:251 "
                                    "resistance_high:261"]) == 0
        err = capsys.readouterr().err
        assert "state saved to PostgreSQL" in err and "DATABASE_URL" in err
        assert bot.main(["console", "/iwm subscriptions"]) == 0  # opened anew, read back from PostgreSQL
        assert "support 151 · entry 161–171 · resistance 251–261" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.db"))


def test_a_zero_cache_ttl_means_no_caching() -> None:
    assert Settings.from_env({"CACHE_TTL_SECONDS": "0"}).cache_ttl_seconds == 0
