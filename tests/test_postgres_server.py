"""The throwaway PostgreSQL server of the tests (tests/support/postgres.py) is a real server, reached with psycopg."""

from __future__ import annotations

import re

import psycopg


def test_rows_written_and_committed_on_one_connection_are_read_on_another(postgres: str) -> None:
    with psycopg.connect(postgres) as writer:
        version = writer.execute("SHOW server_version").fetchone()
        assert version is not None and re.match(r"\d+(\.\d+)?", version[0]), version
        writer.execute("CREATE TABLE probe (id integer PRIMARY KEY, symbol text NOT NULL, close double precision)")
        writer.commit()
        writer.cursor().executemany("INSERT INTO probe VALUES (%s, %s, %s)", [(1, "IWM", 211.5), (2, "SPY", 590.25)])
        with psycopg.connect(postgres) as reader:
            assert reader.execute("SELECT count(*) FROM probe").fetchone() == (0,)  # not committed yet
            reader.rollback()
            writer.commit()
            rows = reader.execute("SELECT id, symbol, close FROM probe ORDER BY id").fetchall()
        assert rows == [(1, "IWM", 211.5), (2, "SPY", 590.25)]
        writer.execute("DROP TABLE probe")
        writer.commit()


def test_server_listens_on_a_unix_socket_only(postgres: str) -> None:
    with psycopg.connect(postgres) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        assert conn.info.host.startswith("/") and conn.info.dbname == "smallcaps_test"
