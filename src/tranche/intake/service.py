"""Receiving tapes, replaying batches, and reading back what intake stored."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import bson
from sqlalchemy import Connection, Engine, and_, delete, func, insert, or_, select
from sqlalchemy.exc import IntegrityError

from tranche.crm.lenders import ensure_lender
from tranche.intake.archive import Archive, ArchivedTape, ArchiveWriter
from tranche.intake.errors import (
    ArchiveMissingError,
    EmptyTapeError,
    UnknownBatchError,
    UnknownLoanError,
    UnsupportedTapeFormatError,
)
from tranche.intake.stages import READ
from tranche.intake.tables import (
    assess_results,
    batch_errors,
    batch_reads,
    batch_runs,
    batches,
    loan_versions,
    slice_results,
)
from tranche.intake.tape import TapeFormat
from tranche.pipeline import NewItem, enqueue
from tranche.pipeline.tables import pipeline_items
from tranche.shared.clock import Clock, stored_utc
from tranche.shared.ids import new_id
from tranche.store.engine import reading

CONTENT_TYPES = {
    "application/bson": TapeFormat.BSON,
    "application/octet-stream": TapeFormat.BSON,
    "application/x-ndjson": TapeFormat.NDJSON,
    "application/jsonl": TapeFormat.NDJSON,
}
COUNTS = ("read", "new", "changed", "unchanged", "withdrawn", "invalid")


def tape_format(content_type: str | None) -> TapeFormat:
    """The tape format of an upload's Content-Type (BSON when none is given)."""
    kind = (content_type or "application/bson").split(";")[0].strip().lower()
    try:
        return CONTENT_TYPES[kind]
    except KeyError:
        raise UnsupportedTapeFormatError(
            f"content type {kind!r} is not a tape: send application/bson or application/x-ndjson",
            field="content-type",
        ) from None


@dataclass(frozen=True, slots=True)
class Receipt:
    batch_id: str
    created: bool  # False: the same bytes were uploaded before, this is that batch


class Intake:
    """The intake service: what the API and the CLI call."""

    def __init__(self, engine: Engine, archive: Archive, clock: Clock) -> None:
        self.engine = engine
        self.archive = archive
        self.clock = clock

    # -- receiving ------------------------------------------------------------------------------------

    def open_upload(self, lender_id: str, fmt: TapeFormat) -> ArchiveWriter:
        with reading(self.engine) as conn:
            ensure_lender(conn, lender_id)
        return self.archive.writer(lender_id, fmt.value)

    def receive(self, lender_id: str, fmt: TapeFormat, chunks: Iterable[bytes]) -> Receipt:
        """Archive a tape from a stream of chunks and register its batch."""
        writer = self.open_upload(lender_id, fmt)
        try:
            for chunk in chunks:
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return self.register(lender_id, fmt, writer.finish())

    def register(self, lender_id: str, fmt: TapeFormat, tape: ArchivedTape) -> Receipt:
        """Record an archived tape as the lender's next batch and queue it; the same bytes give the same batch."""
        if tape.size == 0:
            raise EmptyTapeError("the tape is empty", record=lender_id, field="body")
        for _ in range(5):
            try:
                with self.engine.begin() as conn:
                    existing = conn.execute(
                        select(batches.c.batch_id).where(
                            batches.c.lender_id == lender_id, batches.c.sha256 == tape.sha256
                        )
                    ).scalar()
                    if existing is not None:
                        return Receipt(existing, created=False)
                    sequence = (
                        int(
                            conn.execute(
                                select(func.coalesce(func.max(batches.c.sequence), 0)).where(
                                    batches.c.lender_id == lender_id
                                )
                            ).scalar_one()
                        )
                        + 1
                    )
                    batch_id = new_id("bat")
                    now = self.clock.now()
                    conn.execute(
                        insert(batches).values(
                            batch_id=batch_id,
                            lender_id=lender_id,
                            sequence=sequence,
                            format=fmt.value,
                            sha256=tape.sha256,
                            size_bytes=tape.size,
                            archive_key=tape.key,
                            received_at=now,
                        )
                    )
                    self._start_run(conn, batch_id, lender_id, sequence, run=1, wiped=False, at=now)
                    return Receipt(batch_id, created=True)
            except IntegrityError:
                continue  # a concurrent upload of the same lender took the sequence number: try again
        raise RuntimeError("could not register the batch after 5 attempts")

    def _start_run(
        self,
        conn: Connection,
        batch_id: str,
        lender_id: str,
        sequence: int,
        *,
        run: int,
        wiped: bool,
        at: datetime,
    ) -> None:
        conn.execute(insert(batch_runs).values(batch_id=batch_id, run=run, wiped=wiped, started_at=at))
        enqueue(
            conn,
            "intake",
            NewItem(
                stage=READ,
                payload={"batch_id": batch_id, "run": run},
                partition=lender_id,
                sequence=sequence,
                trace_key=batch_id,
            ),
        )

    # -- replay ---------------------------------------------------------------------------------------

    def replay(self, batch_id: str, *, wipe: bool = False) -> list[tuple[str, int]]:
        """Process a batch again from its archive; returns the (batch, run) pairs queued.

        Without ``wipe`` the batch is diffed against the current state: what it carried is already there, so
        nothing changes unless something was lost. With ``wipe`` the loan versions it and every later batch of
        the lender derived are removed first and all of them are processed again in upload order. Either way
        the end state equals a clean run.
        """
        with self.engine.begin() as conn:
            batch = _batch_row(conn, batch_id)
            if not self.archive.exists(batch.archive_key):
                raise ArchiveMissingError(
                    f"the tape of batch {batch_id} is no longer archived", record=batch_id
                )
            targets = [batch]
            if wipe:
                targets = list(
                    conn.execute(
                        select(batches)
                        .where(batches.c.lender_id == batch.lender_id, batches.c.sequence >= batch.sequence)
                        .order_by(batches.c.sequence)
                    )
                )
                conn.execute(
                    delete(loan_versions).where(
                        loan_versions.c.lender_id == batch.lender_id,
                        loan_versions.c.batch_sequence >= batch.sequence,
                    )
                )
            queued = []
            now = self.clock.now()
            for target in targets:
                run = (
                    int(
                        conn.execute(
                            select(func.max(batch_runs.c.run)).where(batch_runs.c.batch_id == target.batch_id)
                        ).scalar_one()
                    )
                    + 1
                )
                self._start_run(
                    conn, target.batch_id, target.lender_id, target.sequence, run=run, wiped=wipe, at=now
                )
                queued.append((target.batch_id, run))
            return queued

    # -- reading back ---------------------------------------------------------------------------------

    def batch_status(self, batch_id: str) -> dict[str, Any]:
        with reading(self.engine) as conn:
            batch = _batch_row(conn, batch_id)
            run = _current_run(conn, batch_id)
            read = conn.execute(
                select(batch_reads).where(batch_reads.c.batch_id == batch_id, batch_reads.c.run == run)
            ).first()
            sums = conn.execute(
                select(
                    func.count(),
                    func.max(slice_results.c.done_at),
                    *(func.coalesce(func.sum(slice_results.c[c]), 0) for c in COUNTS),
                ).where(slice_results.c.batch_id == batch_id, slice_results.c.run == run)
            ).one()
            errors = conn.execute(
                select(func.count()).where(batch_errors.c.batch_id == batch_id, batch_errors.c.run == run)
            ).scalar_one()
            assessed = conn.execute(
                select(
                    func.coalesce(func.sum(assess_results.c.assessed), 0),
                    func.coalesce(func.sum(assess_results.c.refused), 0),
                    func.max(assess_results.c.done_at),
                ).where(assess_results.c.batch_id == batch_id, assess_results.c.run == run)
            ).one()
            items = dict(
                conn.execute(
                    select(pipeline_items.c.status, func.count())
                    .where(pipeline_items.c.trace_key == batch_id)
                    .group_by(pipeline_items.c.status)
                )
                .tuples()
                .all()
            )
        slices_done = int(sums[0])
        counts = {name: int(value) for name, value in zip(COUNTS, sums[2:], strict=True)}
        counts["assessed"], counts["not_assessed"] = int(assessed[0]), int(assessed[1])
        waiting = sum(items.get(s, 0) for s in ("ready", "leased", "retry_wait"))
        if read is None:
            status = "reading"
        elif items.get("parked", 0):
            status = "stalled"  # an item ran out of attempts: an operator retries it (see /v1/pipeline)
        elif slices_done < read.slices or waiting:
            status = "processing"
        else:
            status = "completed"
        # When the last slice was done: diffed, or assessed if it went on to assessment.
        done = [stored_utc(moment) for moment in (sums[1], assessed[2]) if moment is not None]
        completed_at = max(done) if status == "completed" and done else None
        if read is not None and read.damaged:
            counts["invalid"] += 1  # the unreadable tail counts as one invalid document
        return {
            "batch_id": batch.batch_id,
            "lender_id": batch.lender_id,
            "sequence": batch.sequence,
            "format": batch.format,
            "size_bytes": batch.size_bytes,
            "sha256": batch.sha256,
            "received_at": batch.received_at,
            "run": run,
            "status": status,
            "completed_at": completed_at,
            "documents": None if read is None else read.documents,
            "slices": None if read is None else read.slices,
            "slices_done": slices_done,
            "damaged": bool(read.damaged) if read is not None else False,
            "counts": counts,
            "errors": int(errors),
            "work_items": items,
        }

    def batch_errors(
        self, batch_id: str, *, after: tuple[int, int] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """One page of a batch's errors in tape order.

        ``after`` is the (document, error_id) of the last error of the previous page (keyset paging: pages
        stay consistent while a batch is still adding errors).
        """
        with reading(self.engine) as conn:
            _batch_row(conn, batch_id)
            run = _current_run(conn, batch_id)
            e = batch_errors.c
            query = select(e.error_id, e.document, e.loan_id, e.field, e.reason, e.stage).where(
                e.batch_id == batch_id, e.run == run
            )
            if after is not None:
                document, error_id = after
                query = query.where(
                    or_(e.document > document, and_(e.document == document, e.error_id > error_id))
                )
            rows = conn.execute(query.order_by(e.document, e.error_id).limit(limit))
            return [dict(r._mapping) for r in rows]

    def loan(self, lender_id: str, loan_id: str, *, as_of: datetime | None = None) -> dict[str, Any]:
        v = loan_versions.c
        query = select(loan_versions).where(v.lender_id == lender_id, v.loan_id == loan_id)
        if as_of is not None:
            query = query.where(v.recorded_at <= as_of)
        with reading(self.engine) as conn:
            row = conn.execute(query.order_by(v.version.desc()).limit(1)).first()
        if row is None:
            when = f" as of {as_of.isoformat()}" if as_of else ""
            raise UnknownLoanError(
                f"lender {lender_id} has no loan {loan_id!r}{when}", record=loan_id, field="loan_id"
            )
        return version_view(row)

    def versions(self, lender_id: str, loan_id: str) -> list[dict[str, Any]]:
        v = loan_versions.c
        with reading(self.engine) as conn:
            rows = conn.execute(
                select(loan_versions)
                .where(v.lender_id == lender_id, v.loan_id == loan_id)
                .order_by(v.version)
            ).all()
        if not rows:
            raise UnknownLoanError(
                f"lender {lender_id} has no loan {loan_id!r}", record=loan_id, field="loan_id"
            )
        return [version_view(r) for r in rows]


def _batch_row(conn: Connection, batch_id: str) -> Any:
    row = conn.execute(select(batches).where(batches.c.batch_id == batch_id)).first()
    if row is None:
        raise UnknownBatchError(f"no batch {batch_id!r}", record=batch_id, field="batch_id")
    return row


def _current_run(conn: Connection, batch_id: str) -> int:
    return int(
        conn.execute(select(func.max(batch_runs.c.run)).where(batch_runs.c.batch_id == batch_id)).scalar_one()
    )


def version_view(row: Any) -> dict[str, Any]:
    """A stored version as the API shows it: its columns and the document exactly as the lender sent it."""
    data = dict(row._mapping)
    body = bytes(data.pop("body"))
    data.pop("raw_hash")
    data["content_hash"] = bytes(data["content_hash"]).hex()
    data["tape_position"] = data.pop("document")
    data["document"] = _document_json(body, data["format"])
    return data


def _document_json(body: bytes, fmt: str) -> Any:
    import json

    if fmt == TapeFormat.NDJSON:
        return json.loads(body)
    from bson import json_util

    return json.loads(json_util.dumps(bson.decode(body), json_options=json_util.RELAXED_JSON_OPTIONS))
