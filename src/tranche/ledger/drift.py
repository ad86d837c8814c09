"""Telling trading that a portfolio's composition changed, once per burst instead of once per fill.

Settlement (a funded bid, a repaid principal, a default, a write-off) changes what a portfolio holds. Trading
rebalances on that, but a burst of thousands of fills must make one notification per portfolio, not thousands.
:class:`DriftAggregator` collects changes per portfolio and releases one :class:`PortfolioDrifted` when the
portfolio's window (30 s by default, counted from its first change) has passed. It is pure: the clock is
injected and nothing is sent; the caller publishes what :meth:`DriftAggregator.due` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tranche.ledger.messages import PortfolioDrifted
from tranche.shared.clock import Clock

__all__ = ["DriftAggregator", "PortfolioDrifted"]


@dataclass(slots=True)
class _Open:
    investor_id: str
    first_at: datetime
    last_at: datetime
    loan_ids: set[str] = field(default_factory=set)
    changes: int = 0


class DriftAggregator:
    """Folds changes per portfolio over ``window``; see the module's docstring."""

    def __init__(self, clock: Clock, window: timedelta = timedelta(seconds=30)) -> None:
        if window < timedelta(0):
            raise ValueError("the window is not negative")
        self.clock = clock
        self.window = window
        self._open: dict[str, _Open] = {}

    def record(self, portfolio_id: str, investor_id: str, loan_id: str) -> None:
        """Note that ``portfolio_id`` changed because of ``loan_id``."""
        now = self.clock.now()
        entry = self._open.get(portfolio_id)
        if entry is None:
            entry = self._open[portfolio_id] = _Open(investor_id, now, now)
        entry.last_at = now
        entry.loan_ids.add(loan_id)
        entry.changes += 1

    def pending(self) -> int:
        """How many portfolios have changes not yet released."""
        return len(self._open)

    def due(self) -> list[PortfolioDrifted]:
        """Release the portfolios whose window has passed (ordered by portfolio id)."""
        now = self.clock.now()
        ready = sorted(p for p, e in self._open.items() if now - e.first_at >= self.window)
        return [self._release(p) for p in ready]

    def flush(self) -> list[PortfolioDrifted]:
        """Release every portfolio now, window or not (at shutdown)."""
        return [self._release(p) for p in sorted(self._open)]

    def _release(self, portfolio_id: str) -> PortfolioDrifted:
        entry = self._open.pop(portfolio_id)
        return PortfolioDrifted(
            portfolio_id,
            entry.investor_id,
            tuple(sorted(entry.loan_ids)),
            entry.changes,
            entry.first_at,
            entry.last_at,
        )
