"""AAII-style sentiment polls on Discord's native polls: `/iwm poll`, weekly schedules, the vote log, one result
post per poll, and `/iwm sentiment`.

Votes are logged from the raw gateway events (they arrive for polls posted before a restart too). The log is a
convenience: when a poll ends, the watcher fetches Discord's final voter lists and reconciles the log with them,
so missed events (the bot was offline) never change a result.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands, tasks

from cogs.common import (
    GREEN,
    GREY,
    POSTING,
    READING,
    RED,
    YELLOW,
    IwmCog,
    add_iwm_cog,
    guild_of,
    in_guild,
    plural,
    png_file,
    renders_chart,
    require_in_channel,
    requires,
    requires_in_target,
    safe_listener,
)
from services.alerts import post_nonce
from services.sentiment import (
    ANSWER_EMOJI,
    ANSWERS,
    BEARISH,
    BULLISH,
    CLAIM_TIMEOUT,
    DEFAULT_HOURS,
    DEFAULT_QUESTION,
    MAX_HOURS,
    MAX_QUESTION,
    MAX_WEEKS,
    MIN_HOURS,
    MIN_VOTES,
    NEUTRAL,
    AaiiSurvey,
    AaiiWeek,
    Percentages,
    Poll,
    PollSpec,
    Schedule,
    SentimentReport,
    SentimentStore,
    Tally,
    aaii_survey,
    sentiment_answer,
    validate_poll,
    validate_weeks,
)

if TYPE_CHECKING:
    from app import SmallcapsBot

log = logging.getLogger(__name__)

manage_messages = requires(manage_messages=True)
MANAGE_MESSAGES = discord.Permissions(manage_messages=True)
# What the bot needs in a scheduled poll's channel: post the poll, read it back when it closes, post the result.
POLLING = POSTING | READING | discord.Permissions(send_polls=True)
CHART = "iwm-sentiment.png"
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
NO_RESULT = 0  # result_message_id of a poll whose message (or channel) was deleted: closed, nothing to post
RESULT_TITLE = "📊 Poll closed: "
# How far before a poll's deadline a result already posted is looked for: clock skew between the bot and Discord
# (a result is never posted before the deadline by the bot's clock, nor before the poll message itself).
RESULT_SEARCH_MARGIN = timedelta(hours=1)
ALL_VOTERS = 1_000_000  # `PollAnswer.voters(limit=...)` pages through 100 at a time until Discord has no more
Hours = app_commands.Range[int, MIN_HOURS, MAX_HOURS]
Question = app_commands.Range[str, 1, MAX_QUESTION]


def build_poll(spec: PollSpec) -> discord.Poll:
    """The Discord poll: answers in answer-id order (Discord numbers them 1, 2, 3 as sent)."""
    poll = discord.Poll(spec.question, duration=timedelta(hours=spec.hours))
    for answer_id in (BULLISH, NEUTRAL, BEARISH):
        poll.add_answer(text=ANSWERS[answer_id], emoji=ANSWER_EMOJI[answer_id])
    return poll


def tally_text(tally: Tally, aaii: Percentages) -> str:
    """Votes per answer; with enough votes, shares and the bull-bear spread against AAII's long-run averages."""
    pct = tally.percentages()
    lines = []
    for answer_id, count in ((BULLISH, tally.bullish), (NEUTRAL, tally.neutral), (BEARISH, tally.bearish)):
        label = f"{ANSWER_EMOJI[answer_id]} {ANSWERS[answer_id]}"
        if pct is None:
            lines.append(f"{label}: {plural(count, 'vote')}")
            continue
        name = ANSWERS[answer_id].lower()
        share, average = getattr(pct, name), getattr(aaii, name)
        lines.append(f"{label}: **{share:.1f}%** ({count}) · AAII avg {average:.1f}% ({share - average:+.1f})")
    if pct is None:
        lines.append(f"Not enough votes for percentages: {tally.total}, at least {MIN_VOTES} needed.")
    else:
        lines.append(f"Bull-bear spread **{pct.spread:+.1f}** points (AAII long-run average {aaii.spread:+.1f}) "
                     f"from {tally.total} votes")
    return "\n".join(lines)


def week_text(week: AaiiWeek) -> str:
    """AAII's reading of one week: `bullish 35.5% · neutral 24.6% · bearish 39.9% · spread -4.4`."""
    p = week.shares
    return f"bullish {p.bullish:.1f}% · neutral {p.neutral:.1f}% · bearish {p.bearish:.1f}% · spread {p.spread:+.1f}"


def _colour(tally: Tally | None, aaii: Percentages) -> discord.Colour:
    pct = tally.percentages() if tally else None
    if pct is None:
        return GREY
    return GREEN if pct.spread > aaii.spread else RED if pct.spread < 0 else YELLOW


def result_embed(poll: Poll, tally: Tally, report: SentimentReport) -> discord.Embed:
    """A closed poll's result; `report`: its guild's report (AAII's survey and the chart's window)."""
    embed = discord.Embed(title=f"{RESULT_TITLE}{poll.question}"[:256], description=tally_text(tally, report.aaii),
                          colour=_colour(tally, report.aaii))
    week = report.survey.week_of(poll.created_at)
    name = f"AAII survey · same week, reported {week.day}" if week else (
        f"AAII survey · latest week, reported {report.aaii_latest.day} (the survey ends before this poll's week)")
    embed.add_field(name=name, value=week_text(week or report.aaii_latest), inline=False)
    embed.set_image(url=f"attachment://{CHART}")
    embed.set_footer(text=f"Opened {poll.created_at:%Y-%m-%d %H:%M} UTC · chart: this server's polls · AAII: "
                          f"{report.aaii_source}"[:2048])
    return embed


def sentiment_embed(report: SentimentReport) -> discord.Embed:
    latest, aaii, week = report.latest, report.aaii, report.aaii_latest
    embed = discord.Embed(title="Community sentiment vs the AAII survey",
                          colour=_colour(latest.tally if latest else None, aaii),
                          description=f"Latest poll: {report.latest_text}.")
    if latest is not None:
        embed.add_field(name=f"Latest poll · opened {latest.poll.created_at:%Y-%m-%d}",
                        value=f"*{latest.poll.question}*\n{tally_text(latest.tally, aaii)}"[:1024], inline=True)
    embed.add_field(name=f"AAII latest week · reported {week.day}", value=week_text(week).replace(" · ", "\n"),
                    inline=True)
    if report.current is not None:
        ends = int(report.current.poll.ends_at.timestamp())
        votes = report.current.tally.total
        embed.add_field(name="Open poll", inline=False, value=(
            f"*{report.current.poll.question}*\n{plural(votes, 'vote')} so far · "
            f"results when it closes <t:{ends}:R>")[:1024])
    if report.average is not None:
        avg = report.average
        window = (f"Average of {plural(report.polls_counted, 'poll')} with "
                  f"{MIN_VOTES}+ votes: bullish {avg.bullish:.1f}%, neutral {avg.neutral:.1f}%, bearish "
                  f"{avg.bearish:.1f}%, spread {avg.spread:+.1f}")
    else:
        window = f"No closed poll had {MIN_VOTES}+ votes"
    embed.add_field(name=f"Last {report.weeks} weeks", inline=False,
                    value=f"{window} ({plural(len(report.history), 'closed poll')}).")
    if report.aaii_note:
        embed.add_field(name="AAII survey coverage", inline=False, value=f"{report.aaii_note}.")
    embed.add_field(name=f"AAII long-run averages · {report.survey.span}", inline=False, value=(
        f"bullish {aaii.bullish:.1f}% · neutral {aaii.neutral:.1f}% · bearish {aaii.bearish:.1f}% · "
        f"spread {aaii.spread:+.1f}"))
    embed.set_image(url=f"attachment://{CHART}")
    embed.set_footer(text=f"Percentages need {report.min_votes}+ votes per poll · AAII: {report.aaii_source}"[:2048])
    return embed


class Sentiment(IwmCog):
    def __init__(self, bot: SmallcapsBot) -> None:
        super().__init__(bot)
        self._closing = asyncio.Lock()  # the watcher and a manual close step never overlap in this process
        self._started = datetime.now(UTC)  # result claims older than this belong to a process that died
        self.last_watch: datetime | None = None  # when the watcher last finished a run

    @property
    def store(self) -> SentimentStore:
        return self.bot.resources.sentiment

    async def survey(self) -> AaiiSurvey:
        """AAII's survey: the operator's copy when configured, else the bundled one."""
        res = self.bot.resources
        return await aaii_survey(res.documents, aaii_file=res.settings.aaii_file, aaii_url=res.settings.aaii_url)

    def background_loops(self) -> tuple[tasks.Loop[Any], ...]:
        return (self.watch,)

    # --- commands -----------------------------------------------------------------------------------------

    @app_commands.command(name="poll",
                          description="Post a sentiment poll: bullish, neutral or bearish (Manage Messages)")
    @app_commands.describe(question=f"Default: {DEFAULT_QUESTION}",
                           hours=f"How long it stays open, {MIN_HOURS}-{MAX_HOURS} (default {DEFAULT_HOURS}, a week)")
    @in_guild()
    @manage_messages
    async def poll(self, interaction: discord.Interaction, question: Question | None = None,
                   hours: Hours | None = None) -> None:
        spec = validate_poll(question, hours)
        # The poll is the interaction response: its message id comes back with the callback.
        callback = await interaction.response.send_message(poll=build_poll(spec))
        message_id = getattr(callback, "message_id", None)
        if message_id is None:  # the console: nothing was posted on Discord
            return
        assert interaction.guild_id is not None and interaction.channel_id is not None
        resource = getattr(callback, "resource", None)
        ends_at = resource.poll.expires_at if isinstance(resource, discord.Message) and resource.poll else None
        await self.store.register_poll(interaction.guild_id, interaction.channel_id, message_id, spec,
                                       discord.utils.snowflake_time(message_id), ends_at=ends_at)

    @app_commands.command(name="poll-schedule",
                          description="Open a sentiment poll in this channel every week (Manage Messages)")
    @app_commands.describe(weekday="Day of the week (UTC)", at="Time of day in UTC, HH:MM, e.g. 14:00",
                           question=f"Default: {DEFAULT_QUESTION}",
                           hours=f"How long each poll stays open (default {DEFAULT_HOURS}, a week)")
    @app_commands.rename(at="time")
    @app_commands.choices(weekday=[app_commands.Choice(name=day, value=i) for i, day in enumerate(WEEKDAYS)])
    @in_guild()
    @requires_in_target(manage_messages=True)
    async def poll_schedule(self, interaction: discord.Interaction, weekday: int, at: str,
                            question: Question | None = None, hours: Hours | None = None) -> None:
        require_in_channel(interaction, None, MANAGE_MESSAGES, POLLING)
        assert interaction.guild_id is not None and interaction.channel_id is not None
        now = datetime.now(UTC)
        schedule = await self.store.set_schedule(interaction.guild_id, interaction.channel_id, weekday, at, now,
                                                 question, hours)
        first = int((schedule.occurrence(now) + timedelta(days=7)).timestamp())
        await interaction.response.send_message(
            f"✅ A sentiment poll will open in <#{schedule.channel_id}> every {WEEKDAYS[schedule.weekday]} at "
            f"{schedule.time_utc:%H:%M} UTC and stay open {schedule.hours} h; the first one <t:{first}:F>. "
            "`/iwm poll-unschedule` turns it off.", ephemeral=True)

    @app_commands.command(name="poll-unschedule", description="Stop the weekly sentiment poll in a channel "
                                                              "(Manage Messages)")
    @app_commands.describe(channel="The channel (default: this channel)")
    @in_guild()
    @requires_in_target(manage_messages=True)
    async def poll_unschedule(self, interaction: discord.Interaction,
                              channel: discord.TextChannel | None = None) -> None:
        target = require_in_channel(interaction, channel, MANAGE_MESSAGES)
        removed = await self.store.remove_schedule(guild_of(interaction), target)
        text = (f"✅ No more weekly polls in <#{target}> (open polls still close and get their result)." if removed
                else f"<#{target}> had no weekly poll.")
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="sentiment", description="This server's sentiment polls vs the AAII survey averages")
    @app_commands.describe(weeks=f"Weeks of polls to chart, 1-{MAX_WEEKS} (default 52)")
    @in_guild()
    @renders_chart()
    async def sentiment(self, interaction: discord.Interaction,
                        weeks: app_commands.Range[int, 1, MAX_WEEKS] = 52) -> None:
        validate_weeks(weeks)
        assert interaction.guild_id is not None
        await interaction.response.defer(thinking=True)
        res = self.bot.resources
        report, png = await sentiment_answer(res.database, res.renderer, interaction.guild_id, weeks,
                                             survey=await self.survey())
        await interaction.followup.send(embed=sentiment_embed(report), file=png_file(png, CHART))

    # --- the vote log -------------------------------------------------------------------------------------

    @commands.Cog.listener()
    @safe_listener
    async def on_raw_poll_vote_add(self, payload: discord.RawPollVoteActionEvent) -> None:
        await self._vote(payload, added=True)

    @commands.Cog.listener()
    @safe_listener
    async def on_raw_poll_vote_remove(self, payload: discord.RawPollVoteActionEvent) -> None:
        await self._vote(payload, added=False)

    async def _vote(self, payload: discord.RawPollVoteActionEvent, added: bool) -> None:
        if payload.guild_id is not None:  # the store ignores polls it did not register
            await self.store.record_vote(payload.message_id, payload.user_id, payload.answer_id, added,
                                         datetime.now(UTC))

    # --- closing polls and opening scheduled ones ---------------------------------------------------------

    def _messageable(self, channel_id: int, guild_id: int) -> discord.abc.Messageable:
        channel = self.bot.get_channel(channel_id)
        if isinstance(channel, discord.abc.Messageable):
            return channel
        return self.bot.get_partial_messageable(channel_id, guild_id=guild_id)

    async def close_polls(self, now: datetime | None = None) -> int:
        """Close every poll past its deadline against Discord's final voter lists and post each result once.
        Returns how many results were posted."""
        now = now or datetime.now(UTC)
        posted = 0
        async with self._closing:
            for poll in await self.store.polls_to_close(now):
                if self.bot.get_guild(poll.guild_id) is None:
                    continue  # a guild of another shard process (or one the bot left)
                try:
                    posted += await self._close(poll, now)
                except Exception:
                    log.exception("sentiment: closing poll %s failed; retrying at the next check", poll.message_id)
        return posted

    async def _close(self, poll: Poll, now: datetime) -> bool:
        if not await self.store.claim_result(poll.message_id, now):
            return False  # posted already, or another closer holds the claim
        try:
            return await self._close_claimed(poll, now)
        except discord.Forbidden as exc:
            # Keeping the claim is the back-off: it goes stale after CLAIM_TIMEOUT and the poll is retried then.
            log.warning("sentiment: no access to poll %s in channel %s (%s); retrying in %s", poll.message_id,
                        poll.channel_id, exc.text or exc.status, CLAIM_TIMEOUT)
            return False
        except Exception:
            await self.store.release_claim(poll.message_id)
            raise

    async def _close_claimed(self, poll: Poll, now: datetime) -> bool:
        channel = self._messageable(poll.channel_id, poll.guild_id)
        try:
            message = await channel.fetch_message(poll.message_id)
        except discord.NotFound:
            message = None
        if message is None or message.poll is None:
            # Deleted by a moderator (or its channel was): Discord no longer has the votes, so the poll closes
            # empty and no result is posted.
            await self.store.reconcile(poll.message_id, {}, now)
            await self.store.mark_result_posted(poll.message_id, NO_RESULT)
            log.warning("sentiment: poll %s in channel %s is gone; closed without a result", poll.message_id,
                        poll.channel_id)
            return False
        voters = {answer.id: {user.id async for user in answer.voters(limit=ALL_VOTERS)}
                  for answer in message.poll.answers if answer.id in ANSWERS}
        tally = await self.store.reconcile(poll.message_id, voters, now)
        assert tally is not None  # the poll is registered
        if poll.result_attempted and (posted := await self._posted_result(channel, poll)) is not None:
            await self.store.mark_result_posted(poll.message_id, posted)  # an earlier closer posted it, then died
            log.warning("sentiment: poll %s already had its result %s in the channel; recorded, not reposted",
                        poll.message_id, posted)
            return False
        res = self.bot.resources
        report, png = await sentiment_answer(res.database, res.renderer, poll.guild_id, now=now,
                                             survey=await self.survey())
        result = await channel.send(embed=result_embed(poll, tally, report), file=png_file(png, CHART),
                                    reference=message.to_reference(fail_if_not_exists=False), mention_author=False,
                                    nonce=post_nonce(poll.channel_id, f"poll result {poll.message_id}"))
        if not await self.store.mark_result_posted(poll.message_id, result.id):
            log.warning("sentiment: poll %s already had a result when %s was posted", poll.message_id, result.id)
        log.info("sentiment: poll %s closed (%d votes), result %s", poll.message_id, tally.total, result.id)
        return True

    async def _posted_result(self, channel: discord.abc.Messageable, poll: Poll) -> int | None:
        """The id of this poll's result if a closer already posted it: the bot's reply to the poll with the result
        title, looked for in every message back to the poll's deadline (less a margin), page by page."""
        since = max(discord.utils.snowflake_time(poll.message_id), poll.ends_at - RESULT_SEARCH_MARGIN)
        me = self.bot.user.id if self.bot.user else None
        async for found in channel.history(limit=None, after=since, oldest_first=False):
            if (found.author.id == me and found.reference is not None
                    and found.reference.message_id == poll.message_id
                    and any((e.title or "").startswith(RESULT_TITLE) for e in found.embeds)):
                return found.id
        return None

    async def open_scheduled_polls(self, now: datetime | None = None) -> int:
        """Post the weekly polls whose time has come; returns how many were opened."""
        now = now or datetime.now(UTC)
        opened = 0
        for schedule in await self.store.due_schedules(now, {guild.id for guild in self.bot.guilds}):
            try:
                message = await self._post_scheduled(schedule)
            except discord.NotFound:
                await self.store.remove_schedule(schedule.guild_id, schedule.channel_id)
                log.warning("sentiment: channel %s is gone; its weekly poll was removed", schedule.channel_id)
                continue
            except discord.Forbidden as exc:
                log.warning("sentiment: cannot post the weekly poll in channel %s (%s); skipped this week",
                            schedule.channel_id, exc.text or exc.status)
                continue
            except discord.HTTPException:
                await self.store.release_schedule(schedule)
                log.exception("sentiment: posting the weekly poll in channel %s failed; retrying at the next "
                              "check", schedule.channel_id)
                continue
            opened += 1
            try:  # posted: the week stays claimed whatever happens here
                await self.store.register_poll(schedule.guild_id, schedule.channel_id, message.id,
                                               PollSpec(schedule.question, schedule.hours), message.created_at,
                                               ends_at=message.poll.expires_at if message.poll else None)
            except Exception:
                log.exception("sentiment: weekly poll %s was posted but not registered", message.id)
        return opened

    async def _post_scheduled(self, schedule: Schedule) -> discord.Message:
        spec = PollSpec(schedule.question, schedule.hours)  # validated when the schedule was set
        return await self._messageable(schedule.channel_id, schedule.guild_id).send(poll=build_poll(spec))

    @tasks.loop(seconds=60)
    async def watch(self) -> None:
        """Every minute: close ended polls, then open scheduled ones. The first run, right after start-up, closes
        polls whose deadline passed while the bot was down."""
        for step in (self.close_polls, self.open_scheduled_polls):
            try:
                await step()
            except Exception:
                log.exception("sentiment: %s failed; next try in a minute", step.__name__)
        self.last_watch = datetime.now(UTC)

    @watch.before_loop
    async def before_watch(self) -> None:
        await self.bot.wait_until_ready()
        released = await self.store.release_claims_before(self._started)
        if released:
            log.warning("sentiment: %d result claims of an earlier process given back; each result is looked for "
                        "in its channel before it is posted", released)


async def setup(bot: SmallcapsBot) -> None:
    await add_iwm_cog(bot, Sentiment(bot))
