"""Sentiment polls: validation, the vote log, closing against Discord's voter lists, schedules, the report."""

from __future__ import annotations

import asyncio
import csv
import gzip
from datetime import UTC, date, datetime, time, timedelta

import pytest

from services.charts import Renderer
from services.documents import Documents
from services.errors import InputError
from services.schema import expected_columns
from services.sentiment import (
    BEARISH,
    BULLISH,
    CLAIM_TIMEOUT,
    DEFAULT_HOURS,
    DEFAULT_QUESTION,
    MAX_HOURS,
    MIN_VOTES,
    NEUTRAL,
    SentimentStore,
    Tally,
    aaii_survey,
    bundled_survey,
    parse_survey,
    sentiment_answer,
    validate_poll,
)
from tests.support.aaii import AAII_LAST, AAII_MEANS, AAII_SPREAD, BUNDLED_AAII
from tests.support.provider_server import Reply

T0 = datetime(2026, 9, 7, 14, 0, tzinfo=UTC)  # a Monday, after the bundled AAII survey ends (2026-08-20)
GUILD, OTHER_GUILD, CHANNEL = 100, 200, 10


@pytest.fixture
async def db(database):
    return database  # both engines (tests/conftest.py)


@pytest.fixture
async def store(db):
    return SentimentStore(db)


@pytest.fixture
def renderer():
    r = Renderer()
    yield r
    r.close()


async def new_poll(store: SentimentStore, message_id: int = 1, guild_id: int = GUILD, at: datetime = T0,
                   hours: int = DEFAULT_HOURS):
    return await store.register_poll(guild_id, CHANNEL, message_id, validate_poll(hours=hours), at)


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


# --- validation ---------------------------------------------------------------------------------------------

def test_defaults_and_limits():
    spec = validate_poll()
    assert (spec.question, spec.hours) == (DEFAULT_QUESTION, DEFAULT_HOURS)
    assert validate_poll("  Small caps by spring?  ", 1).question == "Small caps by spring?"
    assert validate_poll("x" * 300, MAX_HOURS).hours == 768


@pytest.mark.parametrize("question, hours", [
    ("ok", 0), ("ok", -5), ("ok", MAX_HOURS + 1), ("ok", 2.5), ("ok", True), ("", 24), ("   \n", 24),
    ("x" * 301, 24),
])
def test_bad_poll_input(question, hours):
    with pytest.raises(InputError) as err:
        validate_poll(question, hours)
    assert str(err.value)


async def test_register_is_idempotent(store):
    first = await new_poll(store)
    again = await new_poll(store, at=T0 + timedelta(hours=1))
    assert first == again
    assert first.ends_at == T0 + timedelta(hours=DEFAULT_HOURS)
    assert first.status == "open" and first.final is None


# --- vote log -----------------------------------------------------------------------------------------------

async def test_tally_add_remove_replace_duplicate(store):
    await new_poll(store)
    assert await store.record_vote(1, 11, BULLISH, True, minutes(1))
    assert not await store.record_vote(1, 11, BULLISH, True, minutes(1))  # replayed event
    assert not await store.record_vote(1, 11, BULLISH, True, minutes(2))  # duplicate add
    assert await store.record_vote(1, 12, BEARISH, True, minutes(2))
    assert await store.record_vote(1, 13, NEUTRAL, True, minutes(3))
    assert await store.tally(1) == Tally(1, 1, 1)
    # 12 changes their mind: the add arrives before the remove; the add replaces the old answer
    assert await store.record_vote(1, 12, BULLISH, True, minutes(4))
    assert await store.tally(1) == Tally(2, 1, 0)
    assert not await store.record_vote(1, 12, BEARISH, False, minutes(4))  # the remove: already gone
    assert await store.tally(1) == Tally(2, 1, 0)
    # 13 withdraws; replaying the remove changes nothing
    assert await store.record_vote(1, 13, NEUTRAL, False, minutes(5))
    assert not await store.record_vote(1, 13, NEUTRAL, False, minutes(5))
    assert await store.tally(1) == Tally(2, 0, 0)


async def test_old_and_reordered_events_are_ignored(store):
    await new_poll(store)
    # the remove overtakes its add: the late add is older than the remove, so the vote stays removed
    assert await store.record_vote(1, 11, BULLISH, False, minutes(2))
    assert not await store.record_vote(1, 11, BULLISH, True, minutes(1))
    assert await store.tally(1) == Tally()
    # a replayed add from before a later replace does not resurrect the replaced answer
    await store.record_vote(1, 12, BULLISH, True, minutes(3))
    await store.record_vote(1, 12, BEARISH, True, minutes(4))
    assert not await store.record_vote(1, 12, BULLISH, True, minutes(3))
    assert await store.tally(1) == Tally(0, 0, 1)


async def test_unknown_poll_and_answer_ignored(store):
    await new_poll(store)
    assert not await store.record_vote(999, 11, BULLISH, True, minutes(1))
    assert not await store.record_vote(1, 11, 4, True, minutes(1))
    assert await store.tally(1) == Tally()
    assert await store.tally(999) == Tally()


async def test_multiselect_poll_keeps_several_answers(store):
    await store.register_poll(GUILD, CHANNEL, 5, validate_poll(), T0, multiselect=True)
    await store.record_vote(5, 11, BULLISH, True, minutes(1))
    await store.record_vote(5, 11, NEUTRAL, True, minutes(2))
    assert await store.tally(5) == Tally(1, 1, 0)


async def test_naive_time_refused(store):
    await new_poll(store)
    with pytest.raises(ValueError, match="timezone"):
        await store.record_vote(1, 11, BULLISH, True, datetime(2026, 9, 7, 15, 0))


async def test_erase_member_takes_only_that_members_votes_in_that_guild(store, db):
    await new_poll(store, 1, GUILD)
    await new_poll(store, 2, OTHER_GUILD)
    for poll in (1, 2):
        await store.record_vote(poll, 11, BULLISH, True, minutes(1))
        await store.record_vote(poll, 12, BEARISH, True, minutes(1))
    await store.reconcile(1, {BULLISH: {11}, BEARISH: {12}}, minutes(3))  # closed: the final tally stays
    assert await db.run(lambda d: SentimentStore.erase_member(d, GUILD, 11)) == 1
    left = await db.run(lambda d: d.execute("SELECT message_id, user_id FROM sentiment_votes "
                                            "ORDER BY message_id, user_id").fetchall())
    assert left == [(1, 12), (2, 11), (2, 12)]
    assert (await store.get_poll(1)).final == Tally(1, 0, 1)
    assert await db.run(lambda d: SentimentStore.erase_member(d, GUILD, 11)) == 0


async def test_a_forgotten_vote_does_not_come_back_when_the_poll_closes(store, db):
    """Discord still lists the member among the voters of a poll open at forget-me: closing it counts that vote
    without storing who cast it, a later vote event of theirs on that poll is not logged, and the tombstone (a
    hash, never the id) goes once the result is posted."""
    await new_poll(store, 1)
    await store.record_vote(1, 11, BULLISH, True, minutes(1))
    await store.record_vote(1, 12, BEARISH, True, minutes(1))
    assert await db.run(lambda d: SentimentStore.erase_member(d, GUILD, 11)) == 1
    assert not await store.record_vote(1, 11, NEUTRAL, True, minutes(2))  # voted again after forget-me
    end = T0 + timedelta(hours=DEFAULT_HOURS)
    assert await store.reconcile(1, {BULLISH: {11}, BEARISH: {12}}, end) == Tally(1, 0, 1)
    assert await store.reconcile(1, {BULLISH: {11}, BEARISH: {12}}, end) == Tally(1, 0, 1)  # a retry, the same

    def user_ids(d):
        return [row[0] for row in d.execute("SELECT user_id FROM sentiment_votes ORDER BY user_id")]

    def dump(d):  # every value in every sentiment table, as text
        return " ".join(str(v) for t in expected_columns() if t.startswith("sentiment")
                        for row in d.execute(f"SELECT * FROM {t}") for v in row)

    assert await db.run(user_ids) == [12]
    assert "11" not in (await db.run(dump)).split()
    assert (await store.get_poll(1)).final == Tally(1, 0, 1)
    assert await store.mark_result_posted(1, 5001)
    assert await db.run(lambda d: d.execute("SELECT count(*) FROM sentiment_forgotten").fetchone()[0]) == 0


async def test_votes_of_closed_polls_obey_retention_and_tallies_stay(store, db):
    """Vote rows of polls closed more than the retention period ago go; the polls keep their final counts;
    open polls and recently closed ones keep their votes."""
    for message_id, at in ((1, T0), (2, T0 + timedelta(days=20)), (3, T0 + timedelta(days=40))):
        await new_poll(store, message_id, at=at, hours=24)
        await store.record_vote(message_id, 11, BULLISH, True, at + timedelta(minutes=1))
        await store.record_vote(message_id, 12, BEARISH, True, at + timedelta(minutes=1))
    for message_id in (1, 2):
        ends = (await store.get_poll(message_id)).ends_at
        await store.reconcile(message_id, {BULLISH: {11}, BEARISH: {12}}, ends)
    now = T0 + timedelta(days=41)
    assert await store.purge_votes_older_than(30, now) == 2  # poll 1 closed 40 days ago: its two votes
    rows = await db.run(lambda d: d.execute("SELECT DISTINCT message_id FROM sentiment_votes ORDER BY 1").fetchall())
    assert rows == [(2,), (3,)]
    assert (await store.get_poll(1)).final == Tally(1, 0, 1) and await store.tally(1) == Tally(1, 0, 1)
    assert await store.purge_votes_older_than(30, now) == 0


# --- closing ------------------------------------------------------------------------------------------------

async def test_reconcile_after_missed_events(store):
    await new_poll(store)
    await store.record_vote(1, 11, BULLISH, True, minutes(1))
    await store.record_vote(1, 12, BEARISH, True, minutes(2))  # removed on Discord while the bot was offline
    await store.record_vote(1, 14, NEUTRAL, True, minutes(3))  # 14 switched to bearish while offline
    end = T0 + timedelta(hours=DEFAULT_HOURS)
    final = {BULLISH: {11, 13}, NEUTRAL: set(), BEARISH: {14}}  # 13 voted while the bot was offline
    tally = await store.reconcile(1, final, end)
    assert tally == Tally(2, 0, 1)
    assert await store.tally(1) == Tally(2, 0, 1)
    rows = await store.db.run(lambda d: list(d.query(
        "SELECT user_id, answer_id FROM sentiment_votes WHERE message_id = 1 AND live = 1 ORDER BY user_id")))
    assert [(r["user_id"], r["answer_id"]) for r in rows] == [(11, BULLISH), (13, BULLISH), (14, BEARISH)]
    poll = await store.get_poll(1)
    assert poll.status == "closed" and poll.final == Tally(2, 0, 1)
    # late gateway events after closing do not move the final tally; reconciling again is harmless
    assert not await store.record_vote(1, 15, BULLISH, True, end + timedelta(minutes=1))
    assert await store.reconcile(1, final, end) == Tally(2, 0, 1)
    assert await store.reconcile(999, final, end) is None
    with pytest.raises(ValueError):
        await store.reconcile(1, {7: {1}}, end)


async def test_polls_to_close_and_once_only_result(store):
    await new_poll(store, 1, hours=24)
    await new_poll(store, 2, hours=48)
    assert await store.polls_to_close(T0 + timedelta(hours=23)) == []
    now = T0 + timedelta(hours=30)  # the bot starts after poll 1's deadline
    assert [p.message_id for p in await store.polls_to_close(now)] == [1]
    await store.reconcile(1, {BULLISH: {11}}, now)
    # two closers race: exactly one may post
    claims = await asyncio.gather(*(store.claim_result(1, now) for _ in range(5)))
    assert sorted(claims) == [False] * 4 + [True]
    assert await store.polls_to_close(now) == []  # claimed
    assert await store.mark_result_posted(1, 5001)
    assert not await store.mark_result_posted(1, 5002)
    assert not await store.claim_result(1, now + 2 * CLAIM_TIMEOUT)
    assert (await store.get_poll(1)).result_message_id == 5001
    later = T0 + timedelta(hours=49)
    assert [p.message_id for p in await store.polls_to_close(later)] == [2]


async def test_failed_or_abandoned_claim_can_be_retried(store):
    await new_poll(store, 1, hours=1)
    now = T0 + timedelta(hours=2)
    assert await store.claim_result(1, now)
    await store.release_claim(1)  # posting failed
    assert [p.message_id for p in await store.polls_to_close(now)] == [1]
    assert await store.claim_result(1, now)
    assert not await store.claim_result(1, now + CLAIM_TIMEOUT / 2)
    stale = now + CLAIM_TIMEOUT + timedelta(seconds=1)  # the poster crashed
    assert [p.message_id for p in await store.polls_to_close(stale)] == [1]
    assert await store.claim_result(1, stale)


# --- schedules ----------------------------------------------------------------------------------------------

async def test_due_schedules_weekly_once(store):
    sunday = T0 - timedelta(days=1)
    schedule = await store.set_schedule(GUILD, CHANNEL, 0, "14:00", sunday, question="Six months?", hours=72)
    assert (schedule.weekday, schedule.time_utc, schedule.hours) == (0, time(14, 0), 72)
    assert await store.due_schedules(T0 - timedelta(minutes=1)) == []
    due = await store.due_schedules(T0)
    assert [s.channel_id for s in due] == [CHANNEL]
    assert await store.due_schedules(T0) == []  # at most once a week
    assert await store.due_schedules(T0 + timedelta(hours=3)) == []
    assert await store.due_schedules(T0 + timedelta(days=6)) == []
    next_week = T0 + timedelta(days=7, minutes=5)
    due = await store.due_schedules(next_week)
    assert len(due) == 1
    await store.release_schedule(due[0])  # posting failed: give the week back
    assert len(await store.due_schedules(next_week + timedelta(minutes=1))) == 1
    # down for the whole grace period: that week is skipped, the next one opens
    assert await store.due_schedules(T0 + timedelta(days=15)) == []
    assert len(await store.due_schedules(T0 + timedelta(days=21))) == 1


async def test_a_shard_process_claims_only_its_guilds_schedules(store):
    """Several shard processes on one database: a process never claims (and so never delays) another's week."""
    await store.set_schedule(GUILD, CHANNEL, 0, "14:00", T0 - timedelta(days=1))
    assert await store.due_schedules(T0, guilds={GUILD + 1}) == []
    assert [s.guild_id for s in await store.due_schedules(T0, guilds={GUILD})] == [GUILD]


async def test_schedule_set_after_this_weeks_time_waits(store):
    await store.set_schedule(GUILD, CHANNEL, 0, time(14, 0), T0 + timedelta(hours=1))
    assert await store.due_schedules(T0 + timedelta(hours=2)) == []
    assert len(await store.due_schedules(T0 + timedelta(days=7))) == 1


@pytest.mark.parametrize("weekday, at", [(7, "14:00"), (-1, "14:00"), (0, "25:00"), (0, "noon")])
async def test_bad_schedule(store, weekday, at):
    with pytest.raises(InputError):
        await store.set_schedule(GUILD, CHANNEL, weekday, at, T0)


async def test_schedules_per_guild(store):
    await store.set_schedule(GUILD, CHANNEL, 0, "14:00", T0)
    await store.set_schedule(GUILD, CHANNEL, 2, "09:30", T0)  # replaces the channel's schedule
    await store.set_schedule(OTHER_GUILD, 99, 4, "20:00", T0)
    mine = await store.schedules(GUILD)
    assert [(s.weekday, s.time_utc) for s in mine] == [(2, time(9, 30))]
    assert await store.remove_schedule(GUILD, CHANNEL)
    assert await store.schedules(GUILD) == []
    assert len(await store.schedules(OTHER_GUILD)) == 1


# --- report -------------------------------------------------------------------------------------------------

async def closed_poll(store, message_id, guild_id, at, bull, neutral, bear):
    await new_poll(store, message_id, guild_id, at)
    users = iter(range(10_000 * message_id, 10_000 * (message_id + 1)))
    final = {answer: {next(users) for _ in range(n)} for answer, n in ((BULLISH, bull), (NEUTRAL, neutral),
                                                                          (BEARISH, bear))}
    await store.reconcile(message_id, final, at + timedelta(days=7))


async def test_minimum_votes_rule(store):
    assert Tally(5, 2, 2).percentages() is None
    pct = Tally(5, 3, 2).percentages()
    assert Tally(5, 3, 2).total == MIN_VOTES
    assert (pct.bullish, pct.neutral, pct.bearish, pct.spread) == (50.0, 30.0, 20.0, 30.0)


async def test_report_this_guild_only(store, db, renderer):
    for week in range(6):
        await closed_poll(store, week + 1, GUILD, T0 + timedelta(weeks=week), 6 + week, 3, 4)
    await closed_poll(store, 7, GUILD, T0 + timedelta(weeks=6), 3, 2, 3)  # 8 votes: too few
    await closed_poll(store, 50, OTHER_GUILD, T0 + timedelta(weeks=6, days=1), 0, 0, 40)
    await new_poll(store, 8, GUILD, T0 + timedelta(weeks=7))
    await store.record_vote(8, 1, BULLISH, True, T0 + timedelta(weeks=7, hours=1))
    now = T0 + timedelta(weeks=7, days=1)
    report, png = await sentiment_answer(db, renderer, GUILD, 52, now=now)
    assert png.startswith(b"\x89PNG")
    assert [r.poll.message_id for r in report.history] == [1, 2, 3, 4, 5, 6, 7]
    assert report.latest.poll.message_id == 7
    assert report.latest.percentages is None
    assert report.latest_text.startswith("not enough votes (8;")
    assert report.current.poll.message_id == 8 and report.current.tally == Tally(1, 0, 0)
    assert report.polls_counted == 6
    first = report.history[0].percentages
    assert first.spread == pytest.approx((6 - 4) / 13 * 100)
    assert report.aaii.spread == pytest.approx(AAII_SPREAD)
    # the window cuts older polls
    short, _ = await sentiment_answer(db, renderer, GUILD, 3, now=now)
    assert [r.poll.message_id for r in short.history] == [6, 7]
    other, _ = await sentiment_answer(db, renderer, OTHER_GUILD, 52, now=now)
    assert [r.poll.message_id for r in other.history] == [50]
    assert other.latest.percentages.bearish == 100.0
    assert "spread -100.0" in other.latest_text
    assert other.vs_aaii.bearish == pytest.approx(100 - AAII_MEANS["bearish"]) and report.vs_aaii is None
    # every poll is after the survey's last week: said so, and no AAII week beside any of them
    assert report.aaii_weeks == (None,) * 7
    assert report.aaii_note == f"AAII's survey ends {AAII_LAST[0]}: no AAII week beside 7 polls from 2026-09-07 on"
    assert other.aaii_note.endswith("beside 1 poll from 2026-10-20 on")  # T0 + 6 weeks + 1 day


async def test_report_with_no_polls(db, renderer):
    report, png = await sentiment_answer(db, renderer, GUILD, 4, now=T0)
    assert report.latest is None and report.history == () and report.average is None
    assert report.latest_text == "no closed poll yet"
    assert png.startswith(b"\x89PNG")


@pytest.mark.parametrize("weeks", [0, -1, 521, 2.0])
async def test_bad_weeks(db, renderer, weeks):
    with pytest.raises(InputError):
        await sentiment_answer(db, renderer, GUILD, weeks)


# --- AAII's survey ------------------------------------------------------------------------------------------

def test_bundled_survey_averages_and_latest_week_match_an_independent_computation():
    survey = bundled_survey()
    avg = survey.averages
    assert (avg.bullish, avg.neutral, avg.bearish) == pytest.approx(
        (AAII_MEANS["bullish"], AAII_MEANS["neutral"], AAII_MEANS["bearish"]), abs=1e-9)
    assert avg.spread == pytest.approx(AAII_SPREAD, abs=1e-9)
    day, bull, neutral, bear, weeks = AAII_LAST
    assert str(survey.latest.day) == day == "2026-08-20"
    assert (survey.latest.shares.bullish, survey.latest.shares.neutral, survey.latest.shares.bearish) == \
        pytest.approx((float(bull) * 100, float(neutral) * 100, float(bear) * 100))
    assert len(survey.weeks) == int(weeks) == 2037 and str(survey.first.day) == "1987-07-24"
    assert survey.span == "1987-07-24..2026-08-20, 2,037 weeks"
    assert "bundled" in survey.source and "AAII" in survey.source
    # the bundle dropped AAII's placeholder week
    assert date(1996, 1, 11) not in {w.day for w in survey.weeks} and survey.skipped == ()


# Three rows of AAII's own file (aaii_sentiment_weekly.csv, its reported_date header), the middle one the
# 1996-01-11 placeholder with 42 in every column.
AAII_SOURCE_ROWS = """reported_date,bullish,neutral,bearish,total,bullish_8wk_mov_avg,bull_bear_spread
1996-01-04,0.55,0.18,0.27,1.0,0.49124999999999996,0.28
1996-01-11,42,42,42,42,42,
1996-01-18,0.42,0.29,0.29,1.0,42,0.13
"""


def test_the_1996_01_11_placeholder_counts_in_no_average():
    survey = parse_survey(AAII_SOURCE_ROWS)
    assert [str(w.day) for w in survey.weeks] == ["1996-01-04", "1996-01-18"]
    assert survey.skipped == (date(1996, 1, 11),)
    assert (survey.averages.bullish, survey.averages.neutral, survey.averages.bearish) == pytest.approx(
        ((55 + 42) / 2, (18 + 29) / 2, (27 + 29) / 2))
    assert survey.week_of(date(1996, 1, 8)) is None  # the placeholder's week has no reading
    assert str(survey.week_of(datetime(1996, 1, 15, 9, tzinfo=UTC)).day) == "1996-01-18"
    # the same weeks in percent, placeholder included
    percent = parse_survey("date,bullish,neutral,bearish\n1996-01-04,55,18,27\n1996-01-11,42,42,42\n"
                           "1996-01-18,42,29,29\n")
    assert percent.averages == survey.averages and percent.skipped == survey.skipped


@pytest.mark.parametrize("text", ["", "date,close\n2026-08-20,1\n", "<!DOCTYPE html><html></html>",
                                  "date,bullish,neutral,bearish\n1996-01-11,42,42,42\n"])
def test_not_a_survey_is_refused(text):
    with pytest.raises(ValueError):
        parse_survey(text)


async def test_operator_file_and_url(tmp_path, server, session):
    path = tmp_path / "aaii.csv"
    path.write_text(AAII_SOURCE_ROWS, encoding="utf-8")
    own = await aaii_survey(None, aaii_file=path)
    assert len(own.weeks) == 2 and "aaii.csv" in own.source
    url = f"{server.url}/aaii.csv"
    server.script("/aaii.csv", Reply(body=AAII_SOURCE_ROWS, content_type="text/csv"))
    live = await aaii_survey(Documents(session, backoff=0.01, max_wait=0.05), aaii_url=url)
    assert str(live.latest.day) == "1996-01-18" and "operator's copy, fetched" in live.source
    # AAII-style refusal (HTML): the bundled survey, dated, and said so
    server.script("/blocked.csv", Reply(body="<!DOCTYPE html><html>Access denied</html>", content_type="text/html"))
    fallback = await aaii_survey(Documents(session, backoff=0.01, max_wait=0.05), aaii_url=f"{server.url}/blocked.csv")
    assert fallback.latest == bundled_survey().latest and "operator's URL failed" in fallback.source
    assert await aaii_survey(Documents(None), aaii_url=url) is bundled_survey()  # offline


async def test_polls_beside_aaii_weeks(store, db, renderer):
    start = datetime(2026, 6, 29, 14, tzinfo=UTC)  # a Monday; AAII reports on Thursdays
    for week in range(8):
        await closed_poll(store, week + 1, GUILD, start + timedelta(weeks=week), 4 + week, 3, 5)
    report, png = await sentiment_answer(db, renderer, GUILD, 12, now=start + timedelta(weeks=8))
    with gzip.open(BUNDLED_AAII, "rt", newline="") as fh:
        thursdays = {r["date"]: r for r in csv.DictReader(fh)}
    expected = [thursdays.get(str((start + timedelta(weeks=w, days=3)).date())) for w in range(8)]
    got = report.aaii_weeks
    assert [str(w.day) if w else None for w in got] == [r["date"] if r else None for r in expected]
    assert [str(w.day) for w in got[:6]] == ["2026-07-02", "2026-07-09", "2026-07-16", "2026-07-23", "2026-07-30",
                                             "2026-08-06"]
    assert got[6].shares.spread == pytest.approx(
        (float(expected[6]["bullish"]) - float(expected[6]["bearish"])) * 100)
    assert report.aaii_note is None  # the survey covers every poll week
    assert png.startswith(b"\x89PNG")


async def test_a_claim_given_back_marks_the_result_attempted(store):
    """A released claim, or one made before this process started (its poster died), is free at once and tells
    the next closer to look for a result already posted before posting one."""
    await new_poll(store, 1, hours=1)
    now = T0 + timedelta(hours=2)
    [poll] = await store.polls_to_close(now)
    assert not poll.result_attempted  # never claimed: nothing can be in the channel
    assert await store.claim_result(1, now)
    assert await store.release_claims_before(now) == 0  # made at `now`: this process's own, still live
    assert await store.polls_to_close(now) == []
    assert await store.release_claims_before(now + timedelta(seconds=1)) == 1  # restarted: the claim is dead
    [poll] = await store.polls_to_close(now)
    assert poll.result_attempted
    assert await store.claim_result(1, now)
    await store.release_claim(1)
    [poll] = await store.polls_to_close(now)
    assert poll.result_attempted
    assert await store.mark_result_posted(1, 5001)
    assert await store.release_claims_before(now + timedelta(days=1)) == 0  # posted: nothing to give back
