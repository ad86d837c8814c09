"""Decoding and validating the documents of a slice, in this thread or in a pool of processes.

Decoding BSON and validating a loan is the CPU-heavy part of intake; the store's part is not. With a pool,
slices are parsed in other processes while this one looks up and writes, so a tape uses every core. What
crosses the process boundary is small: raw documents in, compact tuples out. The worker imports only the
parser (no SQLAlchemy, no web stack).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Protocol

import bson

from tranche.intake.parse import ParseOptions, content_hash, parse_loan

# A parsed document: (index, loan_id, status, fields, content_hash) for a valid loan, where ``fields`` are
# the stored columns from ``status`` to ``borrower_credit_score`` (see ``loan_versions``); or
# (index, loan_id, None, problems, None) with problems as (field, reason) pairs.
Parsed = tuple[int, str | None, str | None, tuple[Any, ...], bytes | None]


def parse_documents(
    lender_id: str, fmt: str, allow_doubles: bool, docs: Sequence[tuple[int, bytes]]
) -> list[Parsed]:
    """Decode and validate each (index, raw document)."""
    options = ParseOptions(allow_double_amounts=allow_doubles)
    decode = bson.decode if fmt == "bson" else json.loads
    out: list[Parsed] = []
    for index, data in docs:
        try:
            decoded = decode(data)
        except Exception as exc:  # the document's own bytes are bad: it alone is refused
            out.append((index, None, None, (("(tape)", f"cannot be decoded: {exc}"),), None))
            continue
        if not isinstance(decoded, dict):
            out.append((index, None, None, (("(tape)", "is not a document (JSON object)"),), None))
            continue
        loan = parse_loan(lender_id, decoded, options)
        loan_id = decoded.get("loan_id") if isinstance(decoded.get("loan_id"), str) else None
        if isinstance(loan, list):
            out.append((index, loan_id, None, tuple((p.field, p.reason) for p in loan), None))
            continue
        b = loan.borrower
        fields = (
            loan.status.value,
            loan.currency,
            loan.principal,
            loan.outstanding_principal,
            str(loan.interest_rate),
            loan.term_months,
            loan.schedule_type.value,
            loan.issue_date,
            loan.next_payment_date,
            loan.all_or_nothing,
            b.country,
            b.age,
            b.income_monthly,
            b.credit_score,
        )
        out.append((index, loan.loan_id, loan.status.value, fields, content_hash(loan)))
    return out


def _exit_with_parent(parent: int) -> None:
    """Runs in each worker: end it when the process that started it is gone (even killed with SIGKILL),
    instead of leaving it idle for ever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class SliceParser(Protocol):
    def parse(
        self, lender_id: str, fmt: str, allow_doubles: bool, docs: Sequence[tuple[int, bytes]]
    ) -> list[Parsed]: ...

    def close(self) -> None: ...


class InlineParser:
    """Parses on the calling thread."""

    def parse(
        self, lender_id: str, fmt: str, allow_doubles: bool, docs: Sequence[tuple[int, bytes]]
    ) -> list[Parsed]:
        return parse_documents(lender_id, fmt, allow_doubles, docs)

    def close(self) -> None:
        return None


class ProcessPoolParser:
    """Parses in a pool of ``processes`` worker processes, started on first use."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def parse(
        self, lender_id: str, fmt: str, allow_doubles: bool, docs: Sequence[tuple[int, bytes]]
    ) -> list[Parsed]:
        if not docs:
            return []
        if self._pool is None:
            # spawn: the workers start clean, without this process's threads, connections and imports.
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
        return self._pool.submit(parse_documents, lender_id, fmt, allow_doubles, list(docs)).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
