"""The operator commands' text output (``--json`` prints the structures themselves): what a person reads."""

from datetime import UTC, datetime

from services.operators.dead_letters import DeadLetter, DeadLetterDetail, Discarded, RetryReport
from services.operators.moderation import VoidOutcome
from services.operators.plurals import plural
from services.operators.voters import VotersReport

DEAD_LETTER_ACTIONS = (
    "`shipskip dead-letters show SEQ` shows one in full; `retry [SEQ...]` folds them again, `discard SEQ --reason TEXT`"
    " sets one aside for good"
)


def when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else "-"


def _short(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%m-%d %H:%M:%S")


def one_line(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def dead_letter_list(letters: list[DeadLetter], total: int) -> str:
    if not total:
        return "no dead letters"
    lines = []
    for letter in letters:
        lines.append(
            f"#{letter.seq} {letter.subject} (set aside {when(letter.recorded_at)}, {plural(letter.size, 'byte')}):"
            f" {one_line(letter.reason)}"
        )
        lines.append(f"    {one_line(letter.data)}")
    shown = f" (the first {len(letters)} shown)" if len(letters) < total else ""
    lines.append(f"{plural(total, 'dead letter')}{shown}: {DEAD_LETTER_ACTIONS}")
    return "\n".join(lines)


def discarded_list(discarded: list[Discarded], total: int) -> str:
    if not total:
        return "no discarded dead letters"
    lines = []
    for item in discarded:
        lines.append(f"#{item.seq} {item.subject} discarded {when(item.discarded_at)}: {one_line(item.discard_reason)}")
        lines.append(f"    set aside {when(item.recorded_at)}: {one_line(item.died_because)}")
        lines.append(f"    {one_line(item.data)}")
    shown = f" (the latest {len(discarded)} shown)" if len(discarded) < total else ""
    lines.append(f"{plural(total, 'discarded dead letter')}{shown}")
    return "\n".join(lines)


def dead_letter_detail(letter: DeadLetterDetail) -> str:
    lines = [
        f"dead letter #{letter.seq}",
        f"subject      {letter.subject}",
        f"reason       {letter.reason}",
        f"set aside    {when(letter.recorded_at)}",
    ]
    if letter.headers is None:
        lines.append("in stream    no: the stream no longer holds this message, so its headers are gone")
    else:
        lines.append(f"stored       {when(letter.stored_at)}")
        if letter.headers:
            lines.append("headers")
            lines += [f"  {name}: {value}" for name, value in sorted(letter.headers.items())]
        else:
            lines.append("headers      none")
    encoding = "UTF-8" if letter.utf8 else "not UTF-8, shown as Python bytes"
    lines.append(f"payload      {plural(letter.size, 'byte')}, {encoding}:")
    lines.append(letter.data)
    return "\n".join(lines)


def retry_summary(report: RetryReport) -> str:
    if not report.letters:
        return "no dead letters to retry"
    lines = [
        f"retried {plural(len(report.letters), 'dead letter')}: {len(report.applied)} applied,"
        f" {len(report.still_dead)} still dead"
    ]
    for outcome in report.letters:
        if outcome.applied:
            lines.append(f"  #{outcome.seq} applied")
        else:
            lines.append(f"  #{outcome.seq} still dead: {one_line(outcome.reason or '')}")
    if report.still_dead:
        lines.append("fix the reader and retry, or set aside for good: shipskip dead-letters discard SEQ --reason TEXT")
    return "\n".join(lines)


def discard_summary(item: Discarded, left: int) -> str:
    if item.already:
        return (
            f"dead letter #{item.seq} was already discarded, {when(item.discarded_at)}:"
            f" {one_line(item.discard_reason, 100)}; nothing changed"
        )
    return (
        f"discarded dead letter #{item.seq} ({item.subject}; it died of: {one_line(item.died_because, 100)});"
        f" kept in dead_letters_discarded with your reason; {plural(left, 'dead letter')} left"
    )


def void_summary(outcome: VoidOutcome) -> str:
    if not outcome.voided:
        where = "not folded yet" if outcome.pending else "folded"
        return (
            f"{outcome.voter_id} is already voided (stream sequence {outcome.seq}, {where};"
            f" reason: {one_line(outcome.reason, 100)}): nothing appended"
        )
    held = (
        f"their {plural(outcome.ballots, 'ballot')} in {plural(outcome.comparisons, 'comparison')} stop counting"
        if outcome.ballots
        else "they have no ballots yet; any they cast will not count"
    )
    return (
        f"voided {outcome.voter_id} (event {outcome.event_id}, stream sequence {outcome.seq}):"
        f" {held} once the projector folds it"
    )


def voters_table(report: VotersReport, since_text: str) -> str:
    scope = report.comparison_id + (f" / {report.tool_id}" if report.tool_id else "")
    window = f"since {when(report.since)} ({since_text})" if report.since is not None else "whole history"
    lines = [
        f"{scope}, {window}, up to stream sequence {report.last_seq}:",
        f"  {plural(report.events, 'event')} ({report.casts} cast, {report.retractions} retracted)"
        f" from {plural(report.voters, 'voter')} at {plural(report.clients, 'client address', 'client addresses')}",
    ]
    if report.without_client:
        lines.append(f"  {plural(report.without_client, 'event')} without a client address")
    if report.undecodable:
        lines.append(f"  {plural(report.undecodable, 'event')} not decodable (see `shipskip dead-letters list`)")
    if not report.events:
        return "\n".join(lines)
    lines.append("")
    shown = len(report.top_clients)
    if shown:
        lines.append(
            f"client addresses (per-day keyed hash), busiest {shown} of {report.clients}:"
            if shown < report.clients
            else "client addresses (per-day keyed hash):"
        )
        lines.append(
            f"  {'client':<32}  {'voters':>6}  {'ballots':>7}  {'casts':>6}  {'retr':>5}  first / last seen (UTC)"
        )
        for c in report.top_clients:
            lines.append(
                f"  {c.client:<32}  {c.voters:>6}  {c.ballots:>7}  {c.casts:>6}  {c.retractions:>5}"
                f"  {_short(c.first_seen)} / {_short(c.last_seen)}"
            )
        lines.append("")
    shown = len(report.top_voters)
    lines.append(f"voters, busiest {shown} of {report.voters}:" if shown < report.voters else "voters:")
    lines.append(
        f"  {'voter':<32}  {'ballots':>7}  {'casts':>6}  {'retr':>5}  {'clients':>7}  {'counted now':>11}"
        "  first / last seen (UTC)"
    )
    for v in report.top_voters:
        now = f"{v.counted_now} of {v.counted_now + v.uncounted_now}"
        if v.voided:
            now = "forgotten" if v.forgotten else "voided"
        lines.append(
            f"  {v.voter_id:<32}  {v.ballots:>7}  {v.casts:>6}  {v.retractions:>5}  {v.clients:>7}  {now:>11}"
            f"  {_short(v.first_seen)} / {_short(v.last_seen)}"
        )
    lines.append("")
    lines.append("void one: shipskip void-voter VOTER_ID --reason TEXT")
    return "\n".join(lines)
