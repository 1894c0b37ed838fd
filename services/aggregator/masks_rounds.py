"""The aggregator's masks rounds: live sessions, per-round deadlines, durable state, restart.

One `LiveRound` per (task, window, attempt).  A client's call submits its
message for the open round and waits until that round closes -- when every
client that can still answer has answered, or at the round's deadline
(``task.masks.round_seconds`` after the previous close, or ``idle_seconds``
after its latest message when the task sets it) -- then gets its input
for the next round (`mpc.masks.server.MasksServer.reply`).  Each accepted
message is in the journal (`masks_journal`) before its sender is answered.

After a restart `resume()` rebuilds every live session by replaying the
journal; a round whose deadline passed while the process was down closes at
once with the messages it had, so clients that retry their last call (same
bytes: idempotent) continue, and a round that cannot continue aborts.  A
finished round leaves the window's state under `masks_journal.window_blob`,
merged idempotently, so a crash between the result and the status changes
nothing.  An aborted round releases nothing.

Not for several replicas sharing one database: one aggregator process drives
a session (the journal is its memory, not a lock).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from twinmpc.mpc.errors import BatchNotClosed, InvalidTask, StaleReport
from twinmpc.mpc.masks import mode
from twinmpc.mpc.masks.errors import NotAParticipant, OutOfOrder, RoundAborted
from twinmpc.mpc.masks.server import MasksServer, Phase
from twinmpc.mpc.masks.session import Session
from twinmpc.mpc.task import Task
from twinmpc.services.aggregator.masks_journal import ABORTED, DONE, RUNNING, RoundJournal, Status, live_sessions, window_blob
from twinmpc.services.storage import Datastore

log = logging.getLogger("twinmpc.aggregator.masks")

MAX_ATTEMPTS = 8


class WindowAlreadyAggregated(OutOfOrder):
    """A masks round already finished for this window: a new attempt would release its inputs twice."""


@dataclass
class LiveRound:
    task: Task
    server: MasksServer
    journal: RoundJournal
    deadline: float
    last_message: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a message came in: the idle timer moved
    driver: asyncio.Task | None = None


class MasksRounds:
    """Every masks session this aggregator runs."""

    def __init__(self, store: Datastore, load_task: Callable[[bytes], Task], clock: Callable[[], float]) -> None:
        self.store = store
        self.load_task = load_task
        self.clock = clock
        self._live: dict[Session, LiveRound] = {}
        self._ended: dict[Session, Status] = {}  # ended sessions' outcomes
        self._opening = asyncio.Lock()  # one session at a time is looked up or opened
        self._wiping: set[asyncio.Task] = set()  # ended sessions' messages being emptied
        # Set once `resume` has rebuilt what a previous process left running. Until then a
        # retry must wait: its session's journal still says RUNNING, which after resume means
        # "abandoned", so answering early told a client whose input was then summed that its
        # round was abandoned.
        self._resumed = asyncio.Event()

    # ----------------------------------------------------------- lifecycle ---
    async def resume(self) -> None:
        """Rebuild the sessions a previous process left running (at start-up)."""
        try:
            for session in await asyncio.to_thread(live_sessions, self.store):
                try:
                    await self._rebuild(session)
                except Exception:  # one broken session must not stop the aggregator; it is logged and dropped
                    log.exception("masks round %s could not be resumed; it is abandoned", session.name)
                    await asyncio.to_thread(RoundJournal(self.store, session).finish)
        finally:
            self._resumed.set()

    async def _rebuild(self, session: Session) -> LiveRound | None:
        journal = RoundJournal(self.store, session)
        status = await asyncio.to_thread(journal.status)
        if status is None:
            return None
        task = self.load_task(session.task_id)
        server = MasksServer(mode.round_config(task, session.window_start, session.attempt))
        closed = {phase: count for phase, count, _ in status.closes}
        for phase in range(Phase.DONE):
            messages = await asyncio.to_thread(journal.messages, phase)
            if phase in closed:
                messages = messages[: closed[phase]]
            for identity, data in messages:
                server.submit(identity, data)
            if phase not in closed:
                break
            try:
                server.close()
            except RoundAborted:
                break
        live = LiveRound(task, server, journal, status.last_event_ms / 1000 + task.masks.round_seconds, last_message=self.clock())
        if server.phase == Phase.DONE:
            await self._finish(live)  # the result may not have reached the window yet: merging is idempotent
        elif server.phase == Phase.ABORTED:
            await self._finish(live)
        else:
            self._start(live)
            log.info("masks round %s resumed in phase %s with %d message(s)", session.name, server.phase.name, server.submitted())
        return live

    def _start(self, live: LiveRound) -> None:
        self._live[live.server.session] = live
        live.driver = asyncio.get_running_loop().create_task(self._drive(live), name=f"masks-{live.server.session.name}")

    def _closes_at(self, live: LiveRound) -> float:
        idle = live.task.masks.idle_seconds
        if idle is None or not live.server.submitted():
            return live.deadline
        return min(live.deadline, live.last_message + idle)

    async def _drive(self, live: LiveRound) -> None:
        """Close each round at its deadline or idle timeout (rounds whose clients all answered close on the last message)."""
        while live.server.phase < Phase.DONE:
            live.arrived.clear()
            try:
                await asyncio.wait_for(live.arrived.wait(), max(0.0, self._closes_at(live) - self.clock()))
                continue  # recompute: the idle timer moved
            except TimeoutError:
                pass
            async with live.lock:
                if live.server.phase < Phase.DONE and self.clock() >= self._closes_at(live):
                    await self._close(live)

    # -------------------------------------------------------------- rounds ---
    async def _session(self, session: Session, phase: Phase, identity: str) -> LiveRound | None:
        """The live round; None when it already finished with `identity`'s input summed (a retry that
        arrived after the end: the caller answers b"", the end of the round)."""
        live = self._live.get(session)
        if live is not None:
            return live
        await self._resumed.wait()
        async with self._opening:
            return await self._find_or_open(session, phase, identity)

    async def _find_or_open(self, session: Session, phase: Phase, identity: str) -> LiveRound | None:
        live = self._live.get(session)
        if live is not None:
            return live
        ended = self._ended.get(session)
        if ended is None:
            status = await asyncio.to_thread(RoundJournal(self.store, session).status)
            if status is not None:  # ended in an earlier process (a running one was resumed at start)
                ended = status
        if ended is not None:
            if ended.outcome == RUNNING:  # resume() gave up on it: nothing may be released
                raise RoundAborted(f"round {session.name} was abandoned when it could not be resumed")
            if ended.outcome == ABORTED:
                raise RoundAborted(ended.reason)
            # a record from before outcomes named their inputs: only a retried last call is known summed
            counted = phase == Phase.UNMASK if ended.summed is None else identity in ended.summed
            if counted:
                return None
            raise WindowAlreadyAggregated(f"round {session.name} is finished without {identity!r}'s input")
        if phase != Phase.ADVERTISE:
            raise NotAParticipant(f"no masks round {session.name} is running; start with Advertise")
        return await self._open(session)

    async def _open(self, session: Session) -> LiveRound:
        task = self.load_task(session.task_id)
        config = mode.round_config(task, session.window_start, session.attempt)  # masks mode, aligned window
        now = self.clock()
        if now < session.window_start + task.window_seconds:
            raise BatchNotClosed(f"window {session.window_start} closes at {session.window_start + task.window_seconds}")
        if now > session.window_start + task.window_seconds + task.report_expiry_seconds:
            raise StaleReport(f"window {session.window_start} is older than the task's {task.report_expiry_seconds}s report expiry")
        if not 0 <= session.attempt < MAX_ATTEMPTS:
            raise InvalidTask(f"attempt must be in 0..{MAX_ATTEMPTS - 1}")
        for other in self._live:
            if other.task_id == session.task_id and other.window_start == session.window_start:
                raise OutOfOrder(f"attempt {other.attempt} of window {session.window_start} is running; join it")
        if await asyncio.to_thread(self.store.get_blob, window_blob(session.task_id, session.window_start)) is not None:
            raise WindowAlreadyAggregated(f"window {session.window_start} was already aggregated by an earlier round")
        journal = RoundJournal(self.store, session)
        await asyncio.to_thread(journal.open, int(now * 1000))
        live = LiveRound(task, MasksServer(config), journal, now + task.masks.round_seconds)
        self._start(live)
        log.info("masks round %s opened", session.name)
        return live

    async def submit(self, identity: str, session: Session, phase: Phase, data: bytes) -> bytes:
        """Submit `identity`'s message of `phase`; once that round closed, its input for the next (b"" at the end)."""
        live = await self._session(session, phase, identity)
        if live is None:
            return b""
        async with live.lock:
            if live.server.submit(identity, data):
                live.last_message = self.clock()
                live.arrived.set()
                try:
                    await asyncio.to_thread(live.journal.record, phase, identity, data)
                except Exception as exc:  # the message is not durable: this round cannot promise anything any more
                    await self._abort(live, f"storage failure while recording a message: {exc}")
                    raise
            if live.server.phase == phase and live.server.complete():
                await self._close(live)
        async with live.changed:
            await live.changed.wait_for(lambda: live.server.phase != phase)
        now = live.server.phase
        if now == Phase.ABORTED:
            raise RoundAborted(live.server.abort_reason)
        if now != phase + 1:
            raise NotAParticipant(f"round {session.name} moved on to {now.name}; this client missed {Phase(phase + 1).name}")
        return b"" if now == Phase.DONE else live.server.reply(identity)

    async def _close(self, live: LiveRound) -> None:
        """Close the open round (caller holds the lock), persist the close, wake every waiting caller."""
        phase, count = live.server.phase, live.server.submitted()
        try:
            live.server.close()
        except RoundAborted as exc:
            log.warning("masks round %s aborted: %s", live.server.session.name, exc)
        now = self.clock()

        def closed(status: Status) -> None:
            status.closes.append((int(phase), count, int(now * 1000)))

        await asyncio.to_thread(live.journal.update_status, closed)
        live.deadline = now + live.task.masks.round_seconds
        if live.server.phase >= Phase.DONE:
            await self._finish(live)
        async with live.changed:
            live.changed.notify_all()

    async def _abort(self, live: LiveRound, reason: str) -> None:
        live.server.abort(reason)
        await self._finish(live)
        async with live.changed:
            live.changed.notify_all()

    async def _finish(self, live: LiveRound) -> None:
        """Leave the result for collection (idempotent merge), record the outcome, drop the session."""
        session, task = live.server.session, live.task
        summed = None
        if live.server.phase == Phase.DONE:
            summed = live.server.result.summed
            state = mode.window_state(live.server.result)
            await asyncio.to_thread(self.store.update_blob, window_blob(session.task_id, session.window_start),
                                    lambda old: mode.merge(task)(old, state))
            outcome, reason = DONE, ""
            log.info("masks round %s finished: %d inputs summed", session.name, live.server.result.count)
        else:
            outcome, reason = ABORTED, live.server.abort_reason

        def ended(status: Status) -> None:
            status.outcome, status.reason, status.summed = outcome, reason, summed

        await asyncio.to_thread(live.journal.update_status, ended)
        await asyncio.to_thread(live.journal.finish)
        self._live.pop(session, None)
        self._ended[session] = Status(0, outcome=outcome, reason=reason, summed=summed)
        wipe = asyncio.get_running_loop().create_task(asyncio.to_thread(live.journal.wipe), name=f"masks-wipe-{session.name}")
        self._wiping.add(wipe)
        wipe.add_done_callback(self._wiping.discard)


__all__ = ["LiveRound", "MasksRounds", "WindowAlreadyAggregated"]
