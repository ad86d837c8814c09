"""Cash-flow projectors: the built-in projection and the HTTP client of an external service
(:mod:`tranche.assessment.remote`), one interface.

Both answer ``project_many(loans) -> list[Projection | LoanError]``, one result per loan in order; the
client raises for a failed call (see its module). The client, and the HTTP stack under it, are imported only
when an external service is configured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tranche.assessment.errors import LoanError
from tranche.assessment.projection import CashflowTerms, Projection, project_many

__all__ = ["BuiltinCashflowProjector", "CashflowProjector", "make_cashflow_projector"]


class CashflowProjector(Protocol):
    """Projects slices of loans; each result in its loan's position."""

    in_process: bool
    """True when projecting is pure computation in this process (no call to fail), which may then run in a
    pool of processes; False for a remote service."""

    def project_many(self, loans: Sequence[CashflowTerms]) -> list[Projection | LoanError]: ...

    def close(self) -> None: ...


class BuiltinCashflowProjector:
    """The in-process projection (:func:`tranche.assessment.projection.project_many`); never fails a call."""

    in_process = True

    def project_many(self, loans: Sequence[CashflowTerms]) -> list[Projection | LoanError]:
        return project_many(loans)

    def close(self) -> None:
        """Nothing to release."""


def make_cashflow_projector(url: str | None, **options: Any) -> CashflowProjector:
    """The external service's client when ``url`` (``TRANCHE_CASHFLOW_URL``) is set, else the built-in
    projection. ``options`` go to :class:`~tranche.assessment.remote.HttpCashflowClient` (timeout,
    connect_timeout, batch_size)."""
    if url:
        from tranche.assessment.remote import HttpCashflowClient

        return HttpCashflowClient(url, **options)
    return BuiltinCashflowProjector()
