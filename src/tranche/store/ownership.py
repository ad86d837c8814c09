"""One owner per singleton job, with fencing.

Some work must be done by one process of a deployment at a time: relaying the outbox (``outbox-relay``),
matching the book of a currency (``market:EUR``), the ledger's drift timer (``ledger-drift``). Every process
that can do such a job claims it; one of them owns it, the others are standbys that take over within
seconds when the owner dies. The row ``job_owners[job]`` names the owner and an **epoch** (a fencing token)
that goes up by one on every change of owner. The owner checks its epoch *inside the transaction that records
its work* (:meth:`Claim.fence`), so an owner that lost the job (it hung, its connection dropped, somebody
took over) cannot write once another has taken over: its transaction raises :class:`OwnershipLostError` and
rolls back.

How an owner is found alive (the liveness signal), per store:

- **PostgreSQL** (``mode="lock"``, the default there): the owner holds a session-level advisory lock on one
  connection of its own. When the process dies, the server ends its session and frees the lock, and a standby
  (polling ``pg_try_advisory_lock`` every ``heartbeat`` seconds) takes over: a killed owner is replaced within
  about a heartbeat. The owner also writes a heartbeat into its row; a standby that finds the lock held but
  the heartbeat older than ``ttl`` (the owner hangs with its session open) ends that session
  (``pg_terminate_backend``, which needs the same database role) and takes over. A dead *host* is noticed
  when the server's TCP keepalive gives up on its connection (tranche's engine sets keepalives of about 10 s).
  Session locks do not survive a transaction-pooling proxy (PgBouncer ``pool_mode=transaction``): point
  tranche at the server or a session-pooled proxy, or use ``mode="lease"``.
- **SQLite** (``mode="lease"``, the only one there, and an option on PostgreSQL): the owner renews a lease
  every ``heartbeat`` seconds; a standby takes over once the lease is ``ttl`` seconds old. The embedded mode
  is one process, so there the standby case arises only when a second process opens the same file.

Times are read from the database's clock, so hosts whose clocks disagree still agree on expiry.

A process makes one :class:`Ownership` (the composition root does, ``container.ownership``), claims its
jobs, and starts it; a background thread renews what it holds and tries to take what it does not. Changes are
reported to the claim's callbacks on a thread of their own (never the renewing one, so that a slow callback,
such as rebuilding a book, does not stall the renewals), and in the log at INFO: ``owner of market:EUR
(epoch 7)``, ``standby for market:EUR: owned by host-b:4121:9f2c (epoch 7)``, ``lost market:EUR``.

The market's matcher, one owner per currency, any market worker a standby for the others::

    ownership = container.ownership
    books: dict[str, Book] = {}

    def acquired(tenure: Tenure) -> None:          # on the callback thread, not the renewing one
        currency = tenure.job.removeprefix("market:")
        books[currency] = rebuild_book(currency)    # from the durable offers and bids
        subscribe(currency)                         # now this process matches the currency

    def lost(tenure: Tenure) -> None:
        currency = tenure.job.removeprefix("market:")
        unsubscribe(currency)
        books.pop(currency, None)                   # another process owns it now; drop the stale book

    claims = {c: ownership.claim(f"market:{c}", on_acquired=acquired, on_lost=lost) for c in currencies}
    ownership.start()

    # each step of the matcher records its work fenced by the epoch it holds:
    with engine.begin() as conn:
        claims["EUR"].fence(conn)                   # raises OwnershipLostError after a takeover
        record_fills(conn, ...)

A job's name is free text (at most 128 characters); a claim made after :meth:`Ownership.start` is taken up
at the next heartbeat. Several processes of one deployment claiming the same set of currencies spread them
as they come: whoever asks first while a job is free owns it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import BigInteger, ColumnElement, Connection, Engine, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from tranche.shared.errors import TrancheError
from tranche.store.tables import job_owners

log = logging.getLogger("tranche.ownership")

__all__ = [
    "Claim",
    "ClaimState",
    "Ownership",
    "OwnershipLostError",
    "Tenure",
    "fence",
    "owner_of",
]

Mode = Literal["lock", "lease"]
_LOCK_CLASS = 0x7472  # first key of tranche's two-key advisory locks; the second is the job's hash


class OwnershipLostError(TrancheError):
    """The job is owned by another process now (or by nobody): work recorded under the old epoch must not
    commit. The transaction that raised it rolls back; the process is a standby for the job from then on."""

    code = "ownership_lost"


@dataclass(frozen=True, slots=True)
class Tenure:
    """One stretch of ownership of ``job`` by ``owner``; ``epoch`` is its fencing token."""

    job: str
    epoch: int
    owner: str


@dataclass(frozen=True, slots=True)
class ClaimState:
    """What a claim looks like from outside, for health and logs: ``owner`` when this process holds the job,
    ``standby`` when another does (``holder``) or nobody does yet, ``unknown`` while the store is away."""

    job: str
    state: Literal["owner", "standby", "unknown"]
    epoch: int | None
    holder: str | None


def _now_ms(conn: Connection) -> ColumnElement[int]:
    """The database's clock in milliseconds since 1970, as an SQL expression."""
    if conn.dialect.name == "postgresql":
        return literal_column("CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)", BigInteger)
    return literal_column("CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)", BigInteger)


def _lock_key(job: str) -> int:
    """The job's advisory lock key: 32 bits of its hash (two jobs sharing one only queue behind each other)."""
    return int.from_bytes(hashlib.blake2b(job.encode(), digest_size=4).digest(), "big", signed=True)


def fence(conn: Connection, tenure: Tenure) -> None:
    """Check, in ``conn``'s transaction, that ``tenure`` still owns its job; raise
    :class:`OwnershipLostError` otherwise. On PostgreSQL the row is read ``FOR KEY SHARE``: a takeover
    (which locks it ``FOR UPDATE``) waits until this transaction ends, and a transaction fencing after the
    takeover sees the new epoch. The owner's own heartbeats do not wait for it. SQLite has one writer at a
    time, so the check and the commit cannot be split by a takeover there."""
    row = conn.execute(
        select(job_owners.c.epoch, job_owners.c.owner)
        .where(job_owners.c.job == tenure.job)
        .with_for_update(read=True, key_share=True)
    ).first()
    if row is None or row.epoch != tenure.epoch or row.owner != tenure.owner:
        now = f"epoch {row.epoch} of {row.owner}" if row is not None else "no owner"
        raise OwnershipLostError(
            f"{tenure.job} was taken over: this process held epoch {tenure.epoch}, the store has {now}",
            record=tenure.job,
        )


def owner_of(conn: Connection, job: str) -> Tenure | None:
    """The job's current owner, or None when nobody holds it."""
    row = conn.execute(select(job_owners.c.epoch, job_owners.c.owner).where(job_owners.c.job == job)).first()
    if row is None or row.owner is None:
        return None
    return Tenure(job, int(row.epoch), str(row.owner))


def _ensure_row(conn: Connection, job: str) -> None:
    values = {"job": job, "epoch": 0, "owner": None, "heartbeat_ms": 0, "expires_ms": 0}
    if conn.dialect.name == "postgresql":
        conn.execute(postgresql.insert(job_owners).values(**values).on_conflict_do_nothing())
    else:
        conn.execute(sqlite.insert(job_owners).values(**values).on_conflict_do_nothing())


Callback = Callable[[Tenure], object]


class Claim:
    """This process's claim on one job; made by :meth:`Ownership.claim`."""

    def __init__(
        self, ownership: Ownership, job: str, on_acquired: Callback | None, on_lost: Callback | None
    ) -> None:
        if not job or len(job) > 128:
            raise ValueError(f"a job name has 1 to 128 characters: {job!r}")
        self.job = job
        self._ownership = ownership
        self._on_acquired = on_acquired
        self._on_lost = on_lost
        self._tenure: Tenure | None = None
        self._held = threading.Event()
        self._seen: tuple[int, str | None] | None = None  # the epoch and holder last seen as a standby
        self._deadline = 0.0  # lease mode: monotonic time by which a renewal must have succeeded
        self._logged: tuple[int, str | None] | None = None  # the standby state last logged
        self.released = False

    @property
    def tenure(self) -> Tenure | None:
        """The ownership this process holds, or None when it is a standby."""
        return self._tenure

    @property
    def held(self) -> bool:
        return self._tenure is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until this process owns the job (True) or ``timeout`` seconds passed (False)."""
        return self._held.wait(timeout)

    def fence(self, conn: Connection) -> Tenure:
        """Check in ``conn``'s transaction that this process still owns the job (see :func:`fence`); returns
        the tenure. Raises :class:`OwnershipLostError` when it does not, and stops holding the job."""
        tenure = self._tenure
        if tenure is None:
            raise OwnershipLostError(f"this process does not own {self.job}", record=self.job)
        try:
            fence(conn, tenure)
        except OwnershipLostError:
            self._ownership._lose(self, tenure, "the store names another owner")
            raise
        return tenure

    def state(self) -> ClaimState:
        tenure = self._tenure
        if tenure is not None:
            return ClaimState(self.job, "owner", tenure.epoch, tenure.owner)
        if self._seen is None:
            return ClaimState(self.job, "unknown" if not self._ownership.reachable else "standby", None, None)
        epoch, holder = self._seen
        return ClaimState(self.job, "standby", epoch, holder)

    def release(self) -> None:
        """Give the job up now (a standby takes it at its next heartbeat) and claim it no more."""
        self._ownership._release(self)


class Ownership:
    """The claims of one process, renewed by a background thread; see the module docstring.

    ``owner`` names this process in ``job_owners`` and in the logs (default ``host:pid:random``); ``ttl`` is
    how old a lease (or, with ``mode="lock"``, a heartbeat of an owner that still holds its lock) may get
    before a standby takes over; ``heartbeat`` is how often the thread renews and tries.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        owner: str | None = None,
        ttl: float = 15.0,
        heartbeat: float = 1.0,
        mode: Mode | None = None,
    ) -> None:
        if heartbeat <= 0 or ttl <= 2 * heartbeat:
            raise ValueError(f"need 0 < heartbeat and ttl > 2 x heartbeat (ttl={ttl}, heartbeat={heartbeat})")
        self.engine = engine
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:4]}"
        self.ttl = ttl
        self.heartbeat = heartbeat
        postgres = engine.dialect.name == "postgresql"
        self.mode: Mode = mode or ("lock" if postgres else "lease")
        if self.mode == "lock" and not postgres:
            raise ValueError("mode='lock' needs PostgreSQL's advisory locks; SQLite has leases only")
        self.reachable = True
        self._claims: dict[str, Claim] = {}
        self._guard = threading.RLock()
        self._session: Connection | None = None  # lock mode: the connection holding the advisory locks
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._callbacks: queue.SimpleQueue[tuple[Callback, Tenure] | None] = queue.SimpleQueue()
        self._callback_thread: threading.Thread | None = None
        self._failing_since: float | None = None
        self._to_unlock: set[str] = set()  # lock mode: jobs lost whose lock this session may still hold
        self._busy = threading.Lock()  # one thread at a time on the store (and on the session)

    # claims

    def claim(
        self, job: str, *, on_acquired: Callback | None = None, on_lost: Callback | None = None
    ) -> Claim:
        """Claim ``job`` (once per job and process): this process owns it as soon as it is free."""
        with self._guard:
            if job in self._claims:
                raise ValueError(f"{job} is claimed already by this process")
            claim = Claim(self, job, on_acquired, on_lost)
            self._claims[job] = claim
            return claim

    def get(self, job: str) -> Claim | None:
        """This process's claim on ``job``, if it made one."""
        with self._guard:
            return self._claims.get(job)

    @property
    def claims(self) -> list[Claim]:
        with self._guard:
            return list(self._claims.values())

    @property
    def running(self) -> bool:
        """Whether :meth:`start` was called (and :meth:`stop` not since)."""
        return self._thread is not None

    def states(self) -> list[ClaimState]:
        return [claim.state() for claim in self.claims]

    # running

    def start(self) -> None:
        """Take and renew the claims on a background thread (one step at once, so a free job is taken now)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._callback_thread = threading.Thread(
            target=self._run_callbacks, name="ownership-callbacks", daemon=True
        )
        self._callback_thread.start()
        self.step()
        self._thread = threading.Thread(target=self._run, name="ownership", daemon=True)
        self._thread.start()

    def stop(self, *, release: bool = True) -> None:
        """Stop renewing; with ``release`` give up every job held so that standbys take over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if release:
            for claim in self.claims:
                if claim.held:
                    self._release(claim, forget=False)
        self._close_session()
        if self._callback_thread is not None:
            self._callbacks.put(None)
            self._callback_thread.join(timeout=30)
            self._callback_thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat):
            self.step()

    def _run_callbacks(self) -> None:
        while True:
            item = self._callbacks.get()
            if item is None:
                return
            callback, tenure = item
            try:
                callback(tenure)
            except Exception:
                log.exception("ownership callback %s for %s failed", callback, tenure.job)

    def step(self) -> None:
        """One round: renew what is held, try to take what is not. Store errors are logged, never raised;
        in lock mode they end every tenure (the session holding the locks may be gone)."""
        with self._busy:
            self._step()

    def _step(self) -> None:
        try:
            self._unlock_lost()
            for claim in self.claims:
                if claim.released:
                    continue
                if claim.held:
                    self._renew(claim)
                else:
                    self._try_acquire(claim)
        except SQLAlchemyError as error:
            self._failed(error)
            return
        if self._failing_since is not None:
            log.info("ownership: the store is reachable again")
        self._failing_since = None
        self.reachable = True

    def _unlock_lost(self) -> None:
        with self._guard:
            jobs, self._to_unlock = self._to_unlock, set()
        if not jobs or self._session is None:
            return
        with self._session.begin():
            for job in jobs:
                # Session locks count: unlock until this session holds the job's lock no more.
                while self._session.execute(
                    select(literal_column(f"pg_advisory_unlock({_LOCK_CLASS}, {_lock_key(job)})"))
                ).scalar_one():
                    pass

    def _failed(self, error: Exception) -> None:
        first = self._failing_since is None
        if first:
            self._failing_since = time.monotonic()
            log.warning(
                "ownership: the store is unreachable (%s); retrying every %ss",
                str(error).splitlines()[0],
                self.heartbeat,
            )
        self.reachable = False
        if self.mode == "lock":
            self._close_session()
            for claim in self.claims:
                tenure = claim.tenure
                if tenure is not None:
                    self._lose(claim, tenure, "the session holding its lock failed")
        else:
            now = time.monotonic()
            for claim in self.claims:
                tenure = claim.tenure
                if tenure is not None and now > claim._deadline:
                    self._lose(claim, tenure, "its lease could not be renewed in time")

    # the store

    def _connection(self) -> Connection:
        if self._session is None:
            self._session = self.engine.connect()
        return self._session

    def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                # Dropping the connection (not returning it to the pool) frees every lock it held.
                session.invalidate()
                session.close()
            except Exception as error:  # the connection may be dead already
                log.debug("closing the ownership session: %s", error)

    def _transaction(self) -> tuple[Connection, bool]:
        """The connection to run a step's statement on, and whether it is this object's own session."""
        if self.mode == "lock":
            return self._connection(), True
        return self.engine.connect(), False

    def _try_acquire(self, claim: Claim) -> None:
        job = claim.job
        conn, own = self._transaction()
        try:
            with conn.begin():
                if self.mode == "lock":
                    locked: bool = conn.execute(
                        select(literal_column(f"pg_try_advisory_lock({_LOCK_CLASS}, {_lock_key(job)})"))
                    ).scalar_one()
                    if not locked:
                        self._standby(conn, claim)
                        return
                _ensure_row(conn, job)
                now = _now_ms(conn)
                # FOR UPDATE: waits for the old owner's fenced transactions in flight (FOR KEY SHARE).
                row = conn.execute(
                    select(
                        job_owners.c.epoch, job_owners.c.owner, (job_owners.c.expires_ms < now).label("due")
                    )
                    .where(job_owners.c.job == job)
                    .with_for_update()
                ).one()
                if self.mode == "lease" and row.owner is not None and not row.due:
                    claim._seen = (int(row.epoch), row.owner)
                    self._note_standby(claim)
                    return
                epoch = int(row.epoch) + 1
                conn.execute(
                    update(job_owners)
                    .where(job_owners.c.job == job)
                    .values(
                        epoch=epoch,
                        owner=self.owner,
                        acquired_at=datetime.now(UTC),
                        heartbeat_ms=now,
                        expires_ms=now + int(self.ttl * 1000),
                        backend_pid=literal_column("pg_backend_pid()") if self.mode == "lock" else None,
                    )
                )
        finally:
            if not own:
                conn.close()
        tenure = Tenure(job, epoch, self.owner)
        claim._deadline = time.monotonic() + self.ttl - self.heartbeat
        claim._tenure = tenure
        claim._seen = None
        claim._held.set()
        previous = f" from {row.owner}" if row.owner not in (None, self.owner) else ""
        log.info("owner of %s (epoch %d)%s", job, epoch, previous)
        if claim._on_acquired is not None:
            self._callbacks.put((claim._on_acquired, tenure))

    def _standby(self, conn: Connection, claim: Claim) -> None:
        """Lock mode, the lock is held elsewhere: note who holds it, and end its session if it hangs."""
        row = conn.execute(
            select(
                job_owners.c.epoch,
                job_owners.c.owner,
                job_owners.c.backend_pid,
                (job_owners.c.expires_ms < _now_ms(conn)).label("due"),
            ).where(job_owners.c.job == claim.job)
        ).first()
        if row is None:
            claim._seen = (0, None)
        else:
            claim._seen = (int(row.epoch), row.owner)
            if row.due and row.backend_pid is not None and row.owner is not None:
                log.warning(
                    "%s: owner %s holds its lock but its heartbeat is over %ss old; ending its session",
                    claim.job,
                    row.owner,
                    self.ttl,
                )
                conn.execute(select(literal_column(f"pg_terminate_backend({int(row.backend_pid)})")))
        self._note_standby(claim)

    def _note_standby(self, claim: Claim) -> None:
        seen = claim._seen
        if seen != claim._logged:
            claim._logged = seen
            if seen is not None and seen[1] is not None:
                log.info("standby for %s: owned by %s (epoch %d)", claim.job, seen[1], seen[0])
            else:
                log.info("standby for %s", claim.job)

    def _renew(self, claim: Claim) -> None:
        tenure = claim.tenure
        if tenure is None:
            return
        conn, own = self._transaction()
        try:
            with conn.begin():
                now = _now_ms(conn)
                renewed = conn.execute(
                    update(job_owners)
                    .where(
                        job_owners.c.job == tenure.job,
                        job_owners.c.epoch == tenure.epoch,
                        job_owners.c.owner == tenure.owner,
                    )
                    .values(heartbeat_ms=now, expires_ms=now + int(self.ttl * 1000))
                ).rowcount
        finally:
            if not own:
                conn.close()
        if renewed:
            claim._deadline = time.monotonic() + self.ttl - self.heartbeat
        else:
            self._lose(claim, tenure, "the store names another owner")

    def _lose(self, claim: Claim, tenure: Tenure, why: str, *, level: int = logging.WARNING) -> None:
        """End ``tenure`` (from any thread); the keeper's thread frees the job's lock at its next step."""
        with self._guard:
            if claim._tenure != tenure:
                return
            claim._tenure = None
            claim._held.clear()
            claim._logged = None
            if self.mode == "lock":
                self._to_unlock.add(claim.job)
        log.log(level, "lost %s (epoch %d): %s", claim.job, tenure.epoch, why)
        if claim._on_lost is not None:
            self._callbacks.put((claim._on_lost, tenure))

    def _release(self, claim: Claim, *, forget: bool = True) -> None:
        if forget:
            with self._guard:
                claim.released = True
                self._claims.pop(claim.job, None)
        tenure = claim.tenure
        if tenure is None:
            return
        with self._busy:
            self._give_up(claim, tenure)

    def _give_up(self, claim: Claim, tenure: Tenure) -> None:
        try:
            conn, own = self._transaction()
            try:
                with conn.begin():
                    conn.execute(
                        update(job_owners)
                        .where(job_owners.c.job == tenure.job, job_owners.c.epoch == tenure.epoch)
                        .values(owner=None, expires_ms=0, backend_pid=None)
                    )
            finally:
                if not own:
                    conn.close()
        except SQLAlchemyError as error:
            log.warning("could not release %s: %s", claim.job, error)
        self._lose(claim, tenure, "released", level=logging.INFO)
        try:
            self._unlock_lost()
        except SQLAlchemyError:
            self._close_session()
