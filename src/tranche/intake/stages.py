"""Intake as a durable pipeline: ``intake.read`` splits an archived tape into slices, ``intake.diff`` compares
each loan of a slice with its last stored version and appends new versions.

Exactly once: a slice's versions, errors and result row are written in the transaction that moves its
pipeline item on, and that transaction is fenced by the item's lease, so a slice is applied once even when
a worker dies half-way. Order: the diff stage is ordered per lender, so batch n+1 is never diffed before
every slice of batch n has been.

Cheap comparison: each stored version keeps the hash of its raw bytes and of its canonical content. A
document whose bytes hash like the last version's is unchanged without being decoded; only the others are
decoded, validated and compared on content (field order and number formatting do not count as changes).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Row, insert, select

from tranche.crm.lenders import lender_config_of
from tranche.intake import bulk
from tranche.intake.archive import Archive
from tranche.intake.duplicates import DuplicateFinder
from tranche.intake.events import (
    LoanKey,
    LoansChanged,
    LoansLeftActive,
    LoansListed,
    LoansRejected,
    RejectedLoan,
)
from tranche.intake.heads import Head, head_of
from tranche.intake.parsing import (
    AssessOrder,
    Parsed,
    TapeSlice,
    diff_slice,
    key_entries,
    parse_changing,
    scan_documents,
    scan_keys,
    triage,
)
from tranche.intake.tables import batch_errors, batch_reads, batches, slice_results
from tranche.intake.tape import (
    RawDocument,
    TapeDamage,
    TapeFormat,
    iter_documents,
    iter_slices,
    loan_id_of,
)
from tranche.pipeline import Item, NewItem, Next, Pipeline, RetryPolicy, Stage
from tranche.shared.clock import Clock
from tranche.shared.compute import Compute, InlineCompute
from tranche.shared.loan import LoanStatus
from tranche.store.engine import reading

READ = "intake.read"
DIFF = "intake.diff"
TAPE_FIELD = "(tape)"
_SLICES_IN_FLIGHT = 8  # slices read ahead for the pool while the read stage looks for duplicate loan ids

Publish = Callable[[Connection, str, object], None]
"""Writes an event (or a ready message) to the outbox in the connection's transaction, under a topic."""
Prepare = Callable[[str, object], object]
"""Turns an event into what ``Publish`` takes, ahead of the transaction (encoding it, say)."""


@dataclass(frozen=True, slots=True)
class Problem:
    document: int
    loan_id: str | None
    field: str
    reason: str


@dataclass(slots=True)
class ReadResult:
    documents: int = 0
    slices: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    damaged: bool = False


@dataclass(slots=True)
class SliceResult:
    """What a slice's diff found, made ready outside the transaction that records it: the version rows to
    append and the events to publish."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[str, object]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    read: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    invalid: int = 0
    listed: list[LoanKey] = field(default_factory=list)
    changed_keys: list[LoanKey] = field(default_factory=list)
    left_active: dict[str, list[LoanKey]] = field(default_factory=lambda: defaultdict(list))
    assessed: Any = None  # what the diff's own assessment made of the listed and changed loans, if it made it
    assessed_prepared: object = None

    @property
    def withdrawn(self) -> int:
        return sum(len(keys) for keys in self.left_active.values())


class InlineAssessment(Protocol):
    """An assessment the diff stage makes itself, in its pool call and in its transaction, when it needs
    nothing but CPU (the built-in projection): the slice then waits in no other stage, and no loan version
    is read back to be assessed."""

    def order(self, conn: Connection, lender_id: str) -> AssessOrder | None:
        """What the diff's pool call is to do for the lender now; None hands the slice on to the next stage."""
        ...

    def prepare(self, item: Item, assessed: Any) -> object:
        """What :meth:`record` will need, made before the transaction (the event, encoded)."""
        ...

    def record(
        self,
        conn: Connection,
        item: Item,
        assessed: Any,
        prepared: object,
        documents: Callable[[], Mapping[str, int]],
    ) -> None:
        """Stores the assessments in the diff's transaction. ``documents()`` gives each stored loan's place
        in the tape, for the loans that could not be assessed."""
        ...


class IntakeStages:
    """The read and diff stages, bound to the store, the archive and the clock.

    With an ``assessment``, the diff assesses the loans it lists or changes itself whenever that assessment
    gives it an order; otherwise (or without one) it hands them on to ``next_stage``.
    """

    def __init__(
        self,
        engine: Engine,
        archive: Archive,
        clock: Clock,
        *,
        slice_size: int = 1000,
        publish: Publish | None = None,
        prepare: Prepare | None = None,
        next_stage: str | None = None,
        compute: Compute | None = None,
        diff_concurrency: int = 1,
        assessment: InlineAssessment | None = None,
    ) -> None:
        self.engine = engine
        self.archive = archive
        self.clock = clock
        self.slice_size = slice_size
        self.publish = publish
        self.prepare: Prepare = prepare or (lambda _topic, event: event)
        self.next_stage = next_stage
        self.compute: Compute = compute or InlineCompute()
        self.diff_concurrency = diff_concurrency
        self.assessment = assessment
        self._batches: dict[str, Row[Any]] = {}
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        # A store in a SQLite file can be read by the compute pool's processes too.
        self._sqlite_file = database if database and database != ":memory:" else None

    def stages(self) -> list[Stage]:
        return [
            Stage(
                name=READ,
                work=self.read_work,
                commit=self.read_commit,
                lease_seconds=300.0,
                retry=RetryPolicy(max_attempts=5),
            ),
            Stage(
                name=DIFF,
                work=self.diff_work,
                commit=self.diff_commit,
                ordered=True,
                lease_seconds=120.0,
                retry=RetryPolicy(max_attempts=10),
                claim_batch=1,
                concurrency=self.diff_concurrency,
            ),
        ]

    def pipeline(self, more: Sequence[Stage] = ()) -> Pipeline:
        return Pipeline("intake", [*self.stages(), *more])

    # -- read -------------------------------------------------------------------------------------------

    def _batch(self, batch_id: str) -> Row[Any]:
        """The batch's row, for what does not change once it is uploaded (lender, sequence, format, archive
        key): kept for the batches being worked on, so that each slice does not read it again."""
        batch = self._batches.get(batch_id)
        if batch is None:
            with reading(self.engine) as conn:
                batch = conn.execute(select(batches).where(batches.c.batch_id == batch_id)).one()
            if len(self._batches) >= 64:
                self._batches.clear()
            self._batches[batch_id] = batch
        return batch

    def read_work(self, item: Item) -> ReadResult:
        batch = self._batch(item.payload["batch_id"])
        fmt = TapeFormat(batch.format)
        result = ReadResult()
        with self.archive.open(batch.archive_key) as stream:
            # The loan ids of each slice are looked for in the compute pool as soon as the slice is cut, a few
            # slices at a time, while this thread cuts the next ones.
            cut = self._cut(stream, fmt, result)
            calls = ((self._tape_slice(batch.archive_key, fmt, piece),) for piece in cut)
            finder = DuplicateFinder()
            for entries in self.compute.map(key_entries, calls, window=_SLICES_IN_FLIGHT):
                finder.extend(entries)
            result.problems.extend(self._confirm_duplicates(finder, stream, fmt))
        return result

    def _cut(self, stream: Any, fmt: TapeFormat, result: ReadResult) -> Iterator[dict[str, Any]]:
        """Cut the tape into slices of ``slice_size`` documents, each added to ``result`` and yielded as it is
        cut; a damaged tail ends the tape, with a problem."""
        for cut in iter_slices(stream, fmt, self.slice_size):
            if isinstance(cut, TapeDamage):
                result.damaged = True
                result.problems.append(
                    Problem(cut.index, None, TAPE_FIELD, f"at byte {cut.offset}: {cut.reason}")
                )
                return
            first, offset, length, count = cut
            piece = {
                "slice": len(result.slices),
                "offset": offset,
                "length": length,
                "first": first,
                "count": count,
            }
            result.slices.append(piece)
            result.documents += count
            yield piece

    def _tape_slice(self, key: str, fmt: TapeFormat, piece: dict[str, Any]) -> TapeSlice:
        """The slice that ``piece`` (as the read stage cut it, or a diff item's payload) names in a tape."""
        return TapeSlice(self.archive, key, fmt.value, piece["offset"], piece["length"], piece["first"])

    def _confirm_duplicates(self, finder: DuplicateFinder, stream: Any, fmt: TapeFormat) -> list[Problem]:
        problems: list[Problem] = []
        for group in finder.candidate_groups():
            by_id: dict[str, list[int]] = defaultdict(list)
            for index, offset in group:
                stream.seek(offset)
                doc = next(iter_documents(stream, fmt, start_index=index, start_offset=offset))
                assert isinstance(doc, RawDocument)
                loan_id = loan_id_of(doc.data, fmt)
                if loan_id is not None:
                    by_id[loan_id].append(index)
            for loan_id, indexes in by_id.items():
                if len(indexes) < 2:
                    continue
                where = ", ".join(str(i) for i in indexes[:10]) + (" ..." if len(indexes) > 10 else "")
                reason = f"loan_id appears {len(indexes)} times in this tape (documents {where}); none of them is applied"
                problems.extend(Problem(i, loan_id, "loan_id", reason) for i in indexes)
        return problems

    def read_commit(self, conn: Connection, item: Item, result: ReadResult) -> Next:
        batch_id, run = item.payload["batch_id"], item.payload["run"]
        now = self.clock.now()
        conn.execute(
            insert(batch_reads).values(
                batch_id=batch_id,
                run=run,
                documents=result.documents,
                slices=len(result.slices),
                damaged=result.damaged,
                read_at=now,
            )
        )
        _insert_problems(conn, batch_id, run, READ, result.problems)
        # Each slice names the documents the diff must leave alone: those refused here (duplicated ids).
        refused = sorted({problem.document for problem in result.problems})
        children = tuple(
            NewItem(
                stage=DIFF,
                payload={
                    "batch_id": batch_id,
                    "run": run,
                    "sequence": item.sequence,
                    **piece,
                    "refused": refused[
                        bisect_left(refused, piece["first"]) : bisect_left(
                            refused, piece["first"] + piece["count"]
                        )
                    ],
                },
                partition=item.partition,
                sequence=item.sequence,
                trace_key=batch_id,
            )
            for piece in result.slices
        )
        return Next(stage=None, children=children)

    # -- diff -------------------------------------------------------------------------------------------

    def diff_work(self, item: Item) -> SliceResult:
        p = item.payload
        batch = self._batch(p["batch_id"])
        fmt = TapeFormat(batch.format)
        lender_id, sequence = batch.lender_id, batch.sequence
        first, count = p["first"], p["count"]
        with reading(self.engine) as conn:
            if "refused" in p:
                skip = set(p["refused"])
            else:  # a slice queued before slices named their refused documents
                skip = _refused_documents(conn, p["batch_id"], p["run"], first, first + count)
            _version, config = lender_config_of(conn, lender_id)
            order = self.assessment.order(conn, lender_id) if self.assessment is not None else None
        piece = self._tape_slice(batch.archive_key, fmt, p)
        allow_doubles = config.allow_double_amounts
        if self._sqlite_file is not None:
            # The pool reads the slice, looks up the last versions in the store's file itself, and parses
            # (and assesses) what changed: one call, and this process only writes what comes back.
            sorted_, parsed, result_assessed = self.compute.run(
                diff_slice, self._sqlite_file, lender_id, sequence, allow_doubles, piece, skip, order
            )
        else:
            # Reading the slice, splitting it, finding each loan id and hashing run in the compute pool.
            scan = self.compute.run(scan_documents, piece)
            keys = scan_keys(scan, first, skip)
            with reading(self.engine) as conn:
                # Only the loans this slice may change come back; the others are unchanged.
                heads = {row[0]: head_of(row) for row in bulk.changed_heads(conn, lender_id, keys, sequence)}
            sorted_ = triage(scan, first, skip, heads)
            parsed, result_assessed = [], None
            if sorted_.changing:
                # Only documents whose bytes differ from the last version's are decoded and validated; the
                # loans to list or change are assessed in the same call, from the columns just parsed.
                parsed, result_assessed = self.compute.run(
                    parse_changing, lender_id, allow_doubles, piece, sorted_.changing, order
                )
        result = SliceResult(read=sorted_.read, unchanged=sorted_.unchanged, invalid=sorted_.invalid)
        by_index = sorted_.changing
        if not by_index:
            return result
        result.assessed = result_assessed
        data = piece.read()  # the documents are stored as they came
        self._versions(
            result, p, lender_id, fmt.value, bulk.VersionWriter(self.engine), data, by_index, parsed
        )
        if self.publish is not None:
            result.events = self._events(lender_id, p["batch_id"], result)
        if result.assessed is not None and self.assessment is not None:
            result.assessed_prepared = self.assessment.prepare(item, result.assessed)
        return result

    def _versions(
        self,
        result: SliceResult,
        p: dict[str, Any],
        lender_id: str,
        fmt: str,
        writer: bulk.VersionWriter,
        data: bytes,
        by_index: dict[int, tuple[int, int, bytes, Head | None]],
        parsed: list[Parsed],
    ) -> None:
        """The version rows of the parsed documents that are new or changed, counted in ``result``."""
        recorded_at = writer.moment(self.clock.now())
        batch_id, batch_sequence, run = p["batch_id"], p["sequence"], p["run"]
        for index, loan_id, status, columns, digest in parsed:
            if status is None:
                result.invalid += 1
                result.problems.extend(Problem(index, loan_id, field, reason) for field, reason in columns)
                continue
            assert loan_id is not None and digest is not None
            start, size, raw_hash, head = by_index[index]
            if head is not None and head.content_hash == digest:
                result.unchanged += 1
                continue
            version = 1 if head is None else head.version + 1
            result.rows.append(
                (
                    lender_id,
                    loan_id,
                    version,
                    batch_id,
                    batch_sequence,
                    run,
                    index,
                    recorded_at,
                    *columns,  # status ... borrower_credit_score
                    raw_hash,
                    digest,
                    fmt,
                    data[start : start + size],
                )
            )
            key = LoanKey(loan_id, version)
            if head is None:
                result.new += 1
                if status == LoanStatus.ACTIVE:
                    result.listed.append(key)
            else:
                result.changed += 1
                if head.status == LoanStatus.ACTIVE and status != LoanStatus.ACTIVE:
                    result.left_active[status].append(key)
                elif status == LoanStatus.ACTIVE:
                    result.changed_keys.append(key)

    def diff_commit(self, conn: Connection, item: Item, result: SliceResult) -> Next:
        p = item.payload
        batch_id, run = p["batch_id"], p["run"]
        bulk.VersionWriter(conn).write(conn, result.rows)
        _insert_problems(conn, batch_id, run, DIFF, result.problems)
        conn.execute(
            insert(slice_results).values(
                batch_id=batch_id,
                run=run,
                slice=p["slice"],
                read=result.read,
                new=result.new,
                changed=result.changed,
                unchanged=result.unchanged,
                withdrawn=result.withdrawn,
                invalid=result.invalid,
                done_at=self.clock.now(),
            )
        )
        if self.publish is not None:
            for topic, event in result.events:
                self.publish(conn, topic, event)
        if result.assessed is not None and self.assessment is not None:
            rows = result.rows
            self.assessment.record(
                conn, item, result.assessed, result.assessed_prepared, lambda: {r[1]: r[6] for r in rows}
            )
            return Next(stage=None)
        if self.next_stage is None:
            return Next(stage=None)
        wanted = [[k.loan_id, k.version] for k in (*result.listed, *result.changed_keys)]
        if not wanted:
            return Next(stage=None)
        return Next(stage=self.next_stage, payload={**p, "loans": wanted})

    def _events(self, lender_id: str, batch_id: str, result: SliceResult) -> list[tuple[str, object]]:
        """The events of a slice, each prepared for the outbox: ``loan.<lender>.listed`` and so on."""
        events: list[tuple[str, object]] = []
        if result.listed:
            events.append(
                (f"loan.{lender_id}.listed", LoansListed(lender_id, batch_id, tuple(result.listed)))
            )
        if result.changed_keys:
            events.append(
                (f"loan.{lender_id}.changed", LoansChanged(lender_id, batch_id, tuple(result.changed_keys)))
            )
        for status, keys in result.left_active.items():
            events.append(
                (f"loan.{lender_id}.{status}", LoansLeftActive(lender_id, batch_id, status, tuple(keys)))
            )
        if result.problems:
            rejected = tuple(RejectedLoan(p.document, p.loan_id, p.field, p.reason) for p in result.problems)
            events.append((f"loan.{lender_id}.rejected", LoansRejected(lender_id, batch_id, rejected)))
        return [(topic, self.prepare(topic, event)) for topic, event in events]


def _insert_problems(
    conn: Connection, batch_id: str, run: int, stage: str, problems: Sequence[Problem]
) -> None:
    if problems:
        conn.execute(
            insert(batch_errors),
            [
                {
                    "batch_id": batch_id,
                    "run": run,
                    "document": p.document,
                    "loan_id": p.loan_id,
                    "field": p.field,
                    "reason": p.reason,
                    "stage": stage,
                }
                for p in problems
            ],
        )


def _refused_documents(conn: Connection, batch_id: str, run: int, first: int, end: int) -> set[int]:
    """Documents the read stage already refused (duplicated loan ids)."""
    rows = conn.execute(
        select(batch_errors.c.document).where(
            batch_errors.c.batch_id == batch_id,
            batch_errors.c.run == run,
            batch_errors.c.stage == READ,
            batch_errors.c.document >= first,
            batch_errors.c.document < end,
        )
    )
    return {int(r.document) for r in rows}
