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


def test_a_zero_cache_ttl_means_no_caching() -> None:
    assert Settings.from_env({"CACHE_TTL_SECONDS": "0"}).cache_ttl_seconds == 0
