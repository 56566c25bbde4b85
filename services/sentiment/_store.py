"""The sentiment store: polls, the vote log and schedules in the database, each member's erasure and the votes'
retention."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Set
from datetime import UTC, datetime, time, timedelta

from services.errors import InputError, is_whole
from services.sentiment._polls import (
    ANSWERS,
    Poll,
    PollResult,
    PollSpec,
    Schedule,
    Tally,
    parse_time_utc,
    validate_poll,
)
from services.sql import Connection
from services.storage import Database
from services.timefmt import iso_utc

# A result claim older than this is considered abandoned (the poster crashed) and may be claimed again.
CLAIM_TIMEOUT = timedelta(minutes=15)
# `claimed_at` of a claim given back (posting failed, or its process died): older than any stale bound, so free at
# once, and not NULL, so the next closer knows an attempt was made and looks for its result before posting one.
RELEASED = iso_utc(datetime(1970, 1, 1, tzinfo=UTC))
# A scheduled poll may still open this long after its time (the bot was down); later, that week is skipped.
SCHEDULE_GRACE = timedelta(hours=12)


def one_row(d: Connection, sql: str, params: list) -> dict | None:
    """The first row of a query as a dict, or None."""
    return next(d.query(sql, params), None)


def the_row(d: Connection, sql: str, params: list) -> dict:
    """The first row of a query that must have one (a row just written)."""
    row = one_row(d, sql, params)
    if row is None:
        raise LookupError(f"no row for {sql} {params}")
    return row


def member_hash(message_id: int, user_id: int) -> str:
    """The tombstone of a forgotten member on one poll. Member ids are public on Discord, so this is no secret
    (a known id can be matched); it keeps the id itself out of the database for the poll's last days."""
    return hashlib.sha256(f"{message_id}:{user_id}".encode()).hexdigest()


def forgotten(d: Connection, message_id: int) -> set[str]:
    return {row[0] for row in d.execute("SELECT member_hash FROM sentiment_forgotten WHERE message_id = ?",
                                        [message_id])}


def live_tally(d: Connection, message_id: int) -> Tally:
    """The votes the log holds as live for a poll."""
    rows = d.execute("SELECT answer_id, count(*) FROM sentiment_votes WHERE message_id = ? AND live = 1 "
                     "GROUP BY answer_id", [message_id]).fetchall()
    return Tally.from_counts(dict(rows))


def poll_result(d: Connection, row: Mapping) -> PollResult:
    """A poll row with its tally: the final one once closed, the live one from the log before."""
    poll = Poll.from_row(row)
    return PollResult(poll, poll.final if poll.final is not None else live_tally(d, poll.message_id))


class SentimentStore:
    """Polls, vote log and schedules. All methods run their SQL on the database thread."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # polls

    async def register_poll(
        self, guild_id: int, channel_id: int, message_id: int, spec: PollSpec, created_at: datetime,
        *, ends_at: datetime | None = None, multiselect: bool = False,
    ) -> Poll:
        """Record a poll the bot just posted (idempotent). `ends_at` defaults to created_at + spec.hours."""
        row = {
            "message_id": message_id, "guild_id": guild_id, "channel_id": channel_id, "question": spec.question,
            "created_at": iso_utc(created_at),
            "ends_at": iso_utc(ends_at or created_at + timedelta(hours=spec.hours)),
            "multiselect": int(multiselect), "status": "open",
        }

        def write(d: Connection) -> Poll:
            d.execute("INSERT INTO sentiment_polls (message_id, guild_id, channel_id, question, created_at, "
                      "ends_at, multiselect, status) VALUES (:message_id, :guild_id, :channel_id, :question, "
                      ":created_at, :ends_at, :multiselect, :status) ON CONFLICT DO NOTHING", row)
            return Poll.from_row(the_row(d, "SELECT * FROM sentiment_polls WHERE message_id = ?", [message_id]))

        return await self.db.run(write)

    async def get_poll(self, message_id: int) -> Poll | None:
        row = await self.db.run(lambda d: one_row(d, "SELECT * FROM sentiment_polls WHERE message_id = ?",
                                               [message_id]))
        return Poll.from_row(row) if row else None

    async def record_vote(self, message_id: int, user_id: int, answer_id: int, added: bool, at: datetime) -> bool:
        """Apply one vote add/remove event; True if it changed the log.

        Idempotent: an add for a live vote or a remove for a removed one changes nothing, and an event older than
        the last one applied to the same (poll, member, answer) is ignored, so replayed or reordered gateway
        events do not double count. On a single-choice poll an add replaces the member's other live answer.
        Events for unknown or closed polls, or for answer ids other than 1-3, are ignored.
        """
        stamp = iso_utc(at)
        if answer_id not in ANSWERS:
            return False

        def apply(d: Connection) -> bool:
            poll = one_row(d, "SELECT status, multiselect FROM sentiment_polls WHERE message_id = ?", [message_id])
            if poll is None or poll["status"] != "open" or member_hash(message_id, user_id) in forgotten(d, message_id):
                return False
            key = [message_id, user_id, answer_id]
            with d.atomic():
                row = one_row(d, "SELECT live, updated_at FROM sentiment_votes WHERE message_id = ? AND user_id = ? "
                              "AND answer_id = ?", key)
                if row is not None and (row["updated_at"] > stamp or bool(row["live"]) == added):
                    return False
                if added:
                    if not poll["multiselect"]:
                        d.execute("UPDATE sentiment_votes SET live = 0, removed_at = ?, updated_at = ? "
                                  "WHERE message_id = ? AND user_id = ? AND answer_id != ? AND live = 1 "
                                  "AND updated_at <= ?", [stamp, stamp, message_id, user_id, answer_id, stamp])
                    d.execute("INSERT INTO sentiment_votes (message_id, user_id, answer_id, live, added_at, "
                              "updated_at) VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (message_id, user_id, answer_id) "
                              "DO UPDATE SET live = 1, added_at = excluded.added_at, removed_at = NULL, "
                              "updated_at = excluded.updated_at",
                              [*key, stamp, stamp])
                else:
                    # A remove with no row yet (it overtook its add) leaves a tombstone so the late add is ignored.
                    d.execute("INSERT INTO sentiment_votes (message_id, user_id, answer_id, live, removed_at, "
                              "updated_at) VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (message_id, user_id, answer_id) "
                              "DO UPDATE SET live = 0, removed_at = excluded.removed_at, "
                              "updated_at = excluded.updated_at",
                              [*key, stamp, stamp])
            return True

        return await self.db.run(apply)

    async def tally(self, message_id: int) -> Tally:
        """Live votes in the log (the final tally once the poll is closed)."""
        def read(d: Connection) -> Tally:
            row = one_row(d, "SELECT * FROM sentiment_polls WHERE message_id = ?", [message_id])
            return poll_result(d, row).tally if row else live_tally(d, message_id)

        return await self.db.run(read)

    async def polls_to_close(self, now: datetime) -> list[Poll]:
        """Polls whose result still has to be posted: ended (also when the bot starts after the deadline) or
        already reconciled, with no result posted and no live claim on posting it. Oldest deadline first."""
        stamp, stale = iso_utc(now), iso_utc(now - CLAIM_TIMEOUT)
        rows = await self.db.run(lambda d: list(d.query(
            "SELECT * FROM sentiment_polls WHERE result_message_id IS NULL AND (ends_at <= ? OR status = 'closed') "
            "AND (claimed_at IS NULL OR claimed_at < ?) ORDER BY ends_at", [stamp, stale])))
        return [Poll.from_row(r) for r in rows]

    async def reconcile(
        self, message_id: int, final_voters: Mapping[int, Set[int]], at: datetime | None = None
    ) -> Tally | None:
        """Make the log agree with Discord's final voter lists and close the poll with that tally.

        Votes cast while the bot was offline are added, votes the log still holds but Discord does not are
        removed. Members who asked to be forgotten while the poll was open count in the tally but are not logged
        again. Safe to run again (for instance when posting the result failed). None for an unknown poll.
        """
        stamp = iso_utc(at or datetime.now(UTC))
        unknown = set(final_voters) - set(ANSWERS)
        if unknown:
            raise ValueError(f"answer ids {sorted(unknown)} are not poll answers {sorted(ANSWERS)}")
        final = {(user, answer) for answer, users in final_voters.items() for user in users}

        def apply(d: Connection) -> Tally | None:
            if one_row(d, "SELECT 1 AS x FROM sentiment_polls WHERE message_id = ?", [message_id]) is None:
                return None
            with d.atomic():
                gone = forgotten(d, message_id)
                logged = {(user, answer) for user, answer in final if member_hash(message_id, user) not in gone}
                live = set(d.execute("SELECT user_id, answer_id FROM sentiment_votes WHERE message_id = ? "
                                     "AND live = 1", [message_id]).fetchall())
                d.executemany(
                    "UPDATE sentiment_votes SET live = 0, removed_at = ?, updated_at = ? "
                    "WHERE message_id = ? AND user_id = ? AND answer_id = ?",
                    [(stamp, stamp, message_id, user, answer) for user, answer in live - logged])
                d.executemany(
                    "INSERT INTO sentiment_votes (message_id, user_id, answer_id, live, added_at, updated_at) "
                    "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (message_id, user_id, answer_id) DO UPDATE SET live = 1, "
                    "added_at = excluded.added_at, removed_at = NULL, updated_at = excluded.updated_at",
                    [(message_id, user, answer, stamp, stamp) for user, answer in logged - live])
                tally = Tally.from_counts({a: len(users) for a, users in final_voters.items()})
                d.execute("UPDATE sentiment_polls SET status = 'closed', closed_at = coalesce(closed_at, ?), "
                          "bullish = ?, neutral = ?, bearish = ? WHERE message_id = ?",
                          [stamp, tally.bullish, tally.neutral, tally.bearish, message_id])
            return tally

        return await self.db.run(apply)

    # The claim is the result's outbox row: written (synchronous=FULL, Database.durable) before the result is
    # posted, so a crash after posting leaves a claim without a result id, and the next closer looks in the channel
    # for the result (Poll.result_attempted) instead of posting it again.

    async def claim_result(self, message_id: int, now: datetime) -> bool:
        """Take the right to post this poll's result. Only one caller gets True until the claim is released or
        goes stale (CLAIM_TIMEOUT); False once the result is posted."""
        stamp, stale = iso_utc(now), iso_utc(now - CLAIM_TIMEOUT)
        cur = await self.db.durable(lambda d: d.execute(
            "UPDATE sentiment_polls SET claimed_at = ? WHERE message_id = ? AND result_message_id IS NULL "
            "AND (claimed_at IS NULL OR claimed_at < ?)", [stamp, message_id, stale]))
        return cur.rowcount == 1

    async def release_claim(self, message_id: int) -> None:
        """Give the claim back after posting failed, so the next closer retries (and first looks for a result)."""
        await self.db.durable(lambda d: d.execute(
            "UPDATE sentiment_polls SET claimed_at = ? WHERE message_id = ? AND result_message_id IS NULL",
            [RELEASED, message_id]))

    async def release_claims_before(self, started: datetime) -> int:
        """At start-up: the claims made before this process started belong to one that died (one process per
        database), so they are given back at once rather than after CLAIM_TIMEOUT. Returns how many."""
        cur = await self.db.durable(lambda d: d.execute(
            "UPDATE sentiment_polls SET claimed_at = ? WHERE result_message_id IS NULL AND claimed_at IS NOT NULL "
            "AND claimed_at < ?", [RELEASED, iso_utc(started)]))
        return cur.rowcount

    async def mark_result_posted(self, message_id: int, result_message_id: int) -> bool:
        """Record the posted result message (the poll's forget-me tombstones go with it: the poll is settled); False
        if a result was already recorded."""
        def write(d: Connection) -> bool:  # one transaction: `durable` makes it
            cur = d.execute("UPDATE sentiment_polls SET result_message_id = ? WHERE message_id = ? "
                            "AND result_message_id IS NULL", [result_message_id, message_id])
            d.execute("DELETE FROM sentiment_forgotten WHERE message_id = ?", [message_id])
            return cur.rowcount == 1

        return await self.db.durable(write)

    async def purge_votes_older_than(self, days: int, now: datetime | None = None) -> int:
        """Delete the vote rows of polls closed more than `days` ago (LOG_RETENTION_DAYS, like the community log);
        each poll keeps its final tally, counts without ids. Returns how many rows went."""
        before = iso_utc((now or datetime.now(UTC)) - timedelta(days=days))
        cur = await self.db.run(lambda d: d.execute(
            "DELETE FROM sentiment_votes WHERE message_id IN (SELECT message_id FROM sentiment_polls "
            "WHERE status = 'closed' AND closed_at < ?)", [before]))
        return cur.rowcount

    # member rights

    @staticmethod
    def erase_member(d: Connection, guild_id: int, user_id: int) -> int:
        """Delete a member's votes on this guild's polls; returns how many went. Runs on the database thread,
        inside the caller's transaction (services.privacy). Final tallies of closed polls are counts without ids
        and stay. Each poll whose result is still to come gets a tombstone (`member_hash`), so Discord's voter
        list does not bring the vote back when the poll closes."""
        d.executemany("INSERT INTO sentiment_forgotten VALUES (?, ?) ON CONFLICT DO NOTHING", [
            (message_id, member_hash(message_id, user_id)) for (message_id,) in d.execute(
                "SELECT message_id FROM sentiment_polls WHERE guild_id = ? AND result_message_id IS NULL",
                [guild_id])])
        return d.execute("DELETE FROM sentiment_votes WHERE user_id = ? AND message_id IN "
                         "(SELECT message_id FROM sentiment_polls WHERE guild_id = ?)", [user_id, guild_id]).rowcount

    # schedules

    async def set_schedule(
        self, guild_id: int, channel_id: int, weekday: int, at: time | str, now: datetime,
        question: str | None = None, hours: int | None = None,
    ) -> Schedule:
        """Open a poll in this channel every week on `weekday` (0 = Monday) at `at` UTC. Replaces the channel's
        schedule; the first poll opens at the next occurrence after now."""
        if not is_whole(weekday, 0, 6):
            raise InputError(f"weekday {weekday!r}: use 0 (Monday) to 6 (Sunday)")
        spec = validate_poll(question, hours)
        row = {"guild_id": guild_id, "channel_id": channel_id, "weekday": weekday,
               "time_utc": parse_time_utc(at).strftime("%H:%M"), "question": spec.question, "hours": spec.hours,
               "created_at": iso_utc(now)}

        def write(d: Connection) -> Schedule:
            d.execute("INSERT INTO sentiment_schedules (guild_id, channel_id, weekday, time_utc, question, hours, "
                      "created_at) VALUES (:guild_id, :channel_id, :weekday, :time_utc, :question, :hours, "
                      ":created_at) ON CONFLICT (guild_id, channel_id) DO UPDATE SET weekday = excluded.weekday, "
                      "time_utc = excluded.time_utc, question = excluded.question, hours = excluded.hours, "
                      "created_at = excluded.created_at", row)
            return Schedule.from_row(the_row(
                d, "SELECT * FROM sentiment_schedules WHERE guild_id = ? AND channel_id = ?", [guild_id, channel_id]))

        return await self.db.run(write)

    async def remove_schedule(self, guild_id: int, channel_id: int) -> bool:
        cur = await self.db.run(lambda d: d.execute(
            "DELETE FROM sentiment_schedules WHERE guild_id = ? AND channel_id = ?", [guild_id, channel_id]))
        return cur.rowcount > 0

    async def schedules(self, guild_id: int) -> list[Schedule]:
        rows = await self.db.run(lambda d: list(d.query(
            "SELECT * FROM sentiment_schedules WHERE guild_id = ? ORDER BY channel_id", [guild_id])))
        return [Schedule.from_row(r) for r in rows]

    async def due_schedules(self, now: datetime, guilds: Collection[int] | None = None) -> list[Schedule]:
        """Schedules whose weekly time has come, each claimed for this week so it opens at most once a week.

        Due means: the latest occurrence is after the schedule was set, not yet opened, and at most
        SCHEDULE_GRACE ago (after a long outage the missed week is skipped rather than opened days late).
        If posting fails, `release_schedule` gives the week back. `guilds`: only these (a shard process claims
        its own guilds' schedules, never another process's).
        """
        now = now.astimezone(UTC)

        def claim(d: Connection) -> list[Schedule]:
            due = []
            with d.atomic():
                for row in d.query("SELECT * FROM sentiment_schedules ORDER BY id"):
                    schedule = Schedule.from_row(row)
                    if guilds is not None and schedule.guild_id not in guilds:
                        continue
                    at = schedule.occurrence(now)
                    opened = schedule.last_opened_on
                    if at <= schedule.created_at or now - at > SCHEDULE_GRACE or (opened and opened >= at.date()):
                        continue
                    due.append(schedule)
                d.executemany("UPDATE sentiment_schedules SET last_opened_on = ? WHERE id = ?",
                                   [(s.occurrence(now).date().isoformat(), s.id) for s in due])
            return due

        return await self.db.run(claim)

    async def release_schedule(self, schedule: Schedule) -> None:
        """Undo a due_schedules claim (the poll could not be posted), so the next check retries it."""
        previous = schedule.last_opened_on.isoformat() if schedule.last_opened_on else None
        await self.db.run(lambda d: d.execute(
            "UPDATE sentiment_schedules SET last_opened_on = ? WHERE id = ?", [previous, schedule.id]))

