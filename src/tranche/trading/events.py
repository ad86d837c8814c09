"""What trading announces: a portfolio's terms or status changed.

The change is stored by whichever process took the request (an API process), and this event, written in the
same transaction through the outbox, carries it to the market role: there the portfolio's old demand is
withdrawn and the gap analyzer plans under the new terms. So a change takes effect the same way whichever
process received it, and one made while the market role is down is applied when it comes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tranche.shared.messages import Event


@dataclass(frozen=True, slots=True)
class PortfolioChanged(Event):
    """A portfolio was created, edited, paused, resumed or closed; ``version`` counts its terms."""

    topic_template: ClassVar[str] = "portfolio.{portfolio_id}.changed"
    portfolio_id: str
    investor_id: str
    currency: str
    version: int
    status: str
    change: str  # created | edited | paused | resumed | closed
