"""The ledger's flows: cash in and out, settlement of matches, distribution of repayments, loan outcomes.

Every flow is one database transaction: it opens the accounts it needs, applies its transfers as one batch
(:func:`tranche.ledger.adapters.apply_batch`) and writes its own bookkeeping (holdings, loans) beside them.
Transfer ids are derived from the event (``bid:<bid>:cash``, ``rp:<lender>:<loan>:<version>:…``), so a replayed
event changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from tranche.ledger import chart
from tranche.ledger.adapters import (
    SqlLedger,
    _Sql,
    apply_batch,
    load_accounts,
    open_accounts,
    to_micros,
    translate,
)
from tranche.ledger.chart import Code
from tranche.ledger.distribution import Holder, split_payment
from tranche.ledger.domain import Account, BatchPlan, Outcome, Phase, Transfer, TransferResult
from tranche.ledger.drift import DriftAggregator, PortfolioDrifted
from tranche.ledger.errors import InvalidTransferError, LedgerError, ReservationNotFoundError
from tranche.matching.events import BidsRolledBack, LoanFunded, OfferMatched
from tranche.shared.clock import Clock
from tranche.shared.loan import Loan, LoanStatus
from tranche.shared.money import Money


class HoldingStatus:
    RESERVED = "reserved"
    REFUSED = "refused"
    ACTIVE = "active"
    ROLLED_BACK = "rolled_back"
    REPAID = "repaid"
    DEFAULTED = "defaulted"
    WRITTEN_OFF = "written_off"


@dataclass(frozen=True, slots=True)
class BidsOutcome:
    """What a settlement step did per bid: ``done`` bid ids, and ``refused`` ones with the reason."""

    done: tuple[str, ...] = ()
    refused: dict[str, LedgerError] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RepaymentOutcome:
    """What settling one loan version did: transfers created, and the loan's status after it."""

    loan_id: str
    version: int
    transfers: int
    status: str
    skipped: bool = False


@dataclass(slots=True)
class _HoldingRow:
    bid_id: str
    account_id: str
    investor_id: str
    portfolio_id: str
    lender_id: str
    loan_id: str
    currency: str
    amount: int
    investor_rate: Decimal
    lender_rate: Decimal
    status: str


_HOLDING_COLUMNS = (
    "bid_id, account_id, investor_id, portfolio_id, lender_id, loan_id, currency, amount, investor_rate, "
    "lender_rate, status"
)


def _holding_from_row(row: Sequence[Any]) -> _HoldingRow:
    return _HoldingRow(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        int(row[7]),
        Decimal(row[8]),
        Decimal(row[9]),
        row[10],
    )


def _chain(transfers: list[Transfer]) -> list[Transfer]:
    """Link ``transfers`` into one chain: all or nothing."""
    return [
        Transfer(**{**_fields(t), "linked": index < len(transfers) - 1}) for index, t in enumerate(transfers)
    ]


def _fields(t: Transfer) -> dict[str, Any]:
    return {name: getattr(t, name) for name in Transfer.__slots__}


def _first_error(results: Iterable[TransferResult]) -> LedgerError | None:
    for result in results:
        if result.error is not None and result.outcome is Outcome.FAILED:
            return result.error
    return None


class LedgerService:
    """The ledger's use cases over SQL; built by the composition root with an engine and a clock."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        *,
        drift_window: timedelta = timedelta(seconds=30),
        reservation_timeout: timedelta | None = timedelta(days=14),
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.store = SqlLedger(engine, clock)
        self.drift = DriftAggregator(clock, drift_window)
        self.reservation_timeout_us = (
            0 if reservation_timeout is None else reservation_timeout // timedelta(microseconds=1)
        )

    # -- plumbing ---------------------------------------------------------------------------------------------

    def _transaction(
        self,
        accounts: Iterable[Account],
        transfers: Callable[[Connection], list[Transfer]],
        after: Callable[[Connection, BatchPlan], None] | None = None,
    ) -> BatchPlan:
        """Open ``accounts``, apply the transfers ``transfers(conn)`` builds, then run ``after``; one transaction,
        retried when a concurrent writer won a race over an id."""
        accounts = list(accounts)
        for attempt in range(3):
            try:
                with self.engine.begin() as conn:
                    now = to_micros(self.clock.now())
                    open_accounts(conn, accounts, now)
                    plan = apply_batch(conn, transfers(conn), now)
                    if after is not None:
                        after(conn, plan)
                    return plan
            except IntegrityError as exc:
                mapped = translate(exc)
                if mapped is not None:
                    raise mapped from exc
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _single(self, account: Account, transfer: Transfer) -> Transfer:
        plan = self._transaction([account, chart.world(transfer.currency)], lambda _conn: [transfer])
        error = _first_error(plan.results)
        if error is not None:
            raise error
        return self.store.transfers([transfer.id])[transfer.id]

    # -- investor cash ----------------------------------------------------------------------------------------

    def deposit(self, investor_id: str, money: Money, key: str) -> Transfer:
        """Credit ``money`` to the investor's cash; ``key`` makes a retried request one deposit."""
        if money.amount < 1:
            raise InvalidTransferError("a deposit is positive", record=investor_id, field="amount")
        cash = chart.investor_cash(investor_id, money.currency)
        transfer = Transfer(
            f"dep:{investor_id}:{key}",
            chart.world(money.currency).id,
            cash.id,
            money.amount,
            money.currency,
            Code.DEPOSIT,
        )
        return self._single(cash, transfer)

    def withdraw(self, investor_id: str, money: Money, key: str) -> Transfer:
        """Pay ``money`` out of the investor's available cash; more than is available is an OverdraftError."""
        if money.amount < 1:
            raise InvalidTransferError("a withdrawal is positive", record=investor_id, field="amount")
        cash = chart.investor_cash(investor_id, money.currency)
        transfer = Transfer(
            f"wd:{investor_id}:{key}",
            cash.id,
            chart.world(money.currency).id,
            money.amount,
            money.currency,
            Code.WITHDRAWAL,
        )
        return self._single(cash, transfer)

    def pay_out_lender(self, lender_id: str, money: Money, key: str) -> Transfer:
        """The platform pays a lender what its settlement account holds (or more: the lender then owes it)."""
        settlement = chart.lender_settlement(lender_id, money.currency)
        transfer = Transfer(
            f"payout:{lender_id}:{key}",
            settlement.id,
            chart.world(money.currency).id,
            money.amount,
            money.currency,
            Code.PAYOUT,
        )
        return self._single(settlement, transfer)

    def receive_from_lender(self, lender_id: str, money: Money, key: str) -> Transfer:
        """A lender pays the platform (repayments it collected, or a negative settlement balance)."""
        settlement = chart.lender_settlement(lender_id, money.currency)
        transfer = Transfer(
            f"lpay:{lender_id}:{key}",
            chart.world(money.currency).id,
            settlement.id,
            money.amount,
            money.currency,
            Code.LENDER_PAYMENT,
        )
        return self._single(settlement, transfer)

    # -- matches ----------------------------------------------------------------------------------------------

    def on_offer_matched(self, event: OfferMatched) -> BidsOutcome:
        """Reserve each bid's cash (pending transfer to the lender's settlement) and the holding it buys; a bid
        whose investor lacks the cash is refused alone."""
        currency = event.currency
        accounts = [
            chart.lender_settlement(event.lender_id, currency),
            chart.loan_principal(event.lender_id, event.loan_id, currency),
        ]
        transfers: list[Transfer] = []
        for bid in event.bids:
            cash = chart.investor_cash(bid.investor_id, currency)
            hold = chart.holding(bid.bid_id, bid.investor_id, bid.portfolio_id, event.loan_id, currency)
            accounts += [cash, hold]
            transfers += [
                Transfer(
                    f"bid:{bid.bid_id}:cash",
                    cash.id,
                    accounts[0].id,
                    bid.amount,
                    currency,
                    Code.FUNDING,
                    event.loan_id,
                    Phase.PENDING,
                    timeout_us=self.reservation_timeout_us,
                    linked=True,
                ),
                Transfer(
                    f"bid:{bid.bid_id}:holding",
                    accounts[1].id,
                    hold.id,
                    bid.amount,
                    currency,
                    Code.HOLDING,
                    event.loan_id,
                    Phase.PENDING,
                    timeout_us=self.reservation_timeout_us,
                ),
            ]

        def record(conn: Connection, plan: BatchPlan) -> None:
            sql = _Sql(conn)
            now = to_micros(self.clock.now())
            rows = []
            for index, bid in enumerate(event.bids):
                ok = plan.results[2 * index].ok and plan.results[2 * index + 1].ok
                rows.append(
                    (
                        bid.bid_id,
                        f"hold:{bid.bid_id}",
                        bid.investor_id,
                        bid.portfolio_id,
                        event.lender_id,
                        event.loan_id,
                        currency,
                        bid.amount,
                        str(bid.investor_rate),
                        str(bid.lender_rate),
                        HoldingStatus.RESERVED if ok else HoldingStatus.REFUSED,
                        now,
                    )
                )
            if rows:
                p = sql.p
                conn.exec_driver_sql(
                    f"INSERT INTO ledger_holdings ({_HOLDING_COLUMNS}, updated_at) VALUES "
                    f"({', '.join([p] * 12)}) ON CONFLICT (bid_id) DO NOTHING",
                    rows,
                )

        plan = self._transaction(accounts, lambda _conn: transfers, record)
        return self._bids_outcome([b.bid_id for b in event.bids], plan)

    @staticmethod
    def _bids_outcome(bid_ids: Sequence[str], plan: BatchPlan) -> BidsOutcome:
        done: list[str] = []
        refused: dict[str, LedgerError] = {}
        for index, bid_id in enumerate(bid_ids):
            error = _first_error(plan.results[2 * index : 2 * index + 2])
            if error is None:
                done.append(bid_id)
            else:
                refused[bid_id] = error
        return BidsOutcome(tuple(done), refused)

    def _holdings(self, conn: Connection, bid_ids: Iterable[str]) -> dict[str, _HoldingRow]:
        sql = _Sql(conn)
        wanted = list(bid_ids)
        if not wanted:
            return {}
        rows = conn.exec_driver_sql(
            f"SELECT {_HOLDING_COLUMNS} FROM ledger_holdings WHERE {sql.any_of('bid_id')}",
            (sql.list_param(wanted),),
        ).all()
        return {row[0]: _holding_from_row(row) for row in rows}

    def _set_status(self, conn: Connection, bid_ids: Iterable[str], status: str) -> None:
        p = _Sql(conn).p
        now = to_micros(self.clock.now())
        params = [(status, now, bid_id) for bid_id in bid_ids]
        if params:
            conn.exec_driver_sql(
                f"UPDATE ledger_holdings SET status = {p}, updated_at = {p} WHERE bid_id = {p}", params
            )

    def _resolve_bids(
        self,
        bid_ids: Sequence[str],
        phase: Phase,
        status: str,
        also: Callable[[Connection], None] | None = None,
    ) -> tuple[BidsOutcome, list[_HoldingRow]]:
        found: dict[str, _HoldingRow] = {}
        ordered: list[str] = []

        def build(conn: Connection) -> list[Transfer]:
            found.clear()
            found.update(self._holdings(conn, bid_ids))
            ordered[:] = [b for b in bid_ids if b in found]
            transfers: list[Transfer] = []
            for bid_id in ordered:
                h = found[bid_id]
                make = Transfer.post if phase is Phase.POST else Transfer.void
                transfers += [
                    make(
                        f"bid:{bid_id}:cash:{phase.value}",
                        f"bid:{bid_id}:cash",
                        h.currency,
                        code=Code.FUNDING,
                        ref=h.loan_id,
                        linked=True,
                    ),
                    make(
                        f"bid:{bid_id}:holding:{phase.value}",
                        f"bid:{bid_id}:holding",
                        h.currency,
                        code=Code.HOLDING,
                        ref=h.loan_id,
                    ),
                ]
            return transfers

        def record(conn: Connection, plan: BatchPlan) -> None:
            outcome = self._bids_outcome(ordered, plan)
            self._set_status(conn, outcome.done, status)
            if also is not None:
                also(conn)

        plan = self._transaction([], build, record)
        outcome = self._bids_outcome(ordered, plan)
        missing = {
            b: ReservationNotFoundError(f"bid {b} has no reservation in the ledger", record=b, field="bid_id")
            for b in bid_ids
            if b not in found
        }
        return BidsOutcome(outcome.done, {**outcome.refused, **missing}), [found[b] for b in outcome.done]

    def on_loan_funded(self, event: LoanFunded) -> BidsOutcome:
        """Post the listed bids' reservations: cash goes to the lender's settlement, the investor holds the loan."""

        def funded_as_of(conn: Connection) -> None:
            # The holders bought the loan as of this version: payments on it or on earlier tapes are not theirs.
            p = _Sql(conn).p
            conn.exec_driver_sql(
                "INSERT INTO ledger_loans (lender_id, loan_id, currency, status, outstanding_principal, "
                f"settled_version, updated_at) VALUES ({p}, {p}, {p}, 'active', NULL, {p}, {p}) "
                "ON CONFLICT (lender_id, loan_id) DO UPDATE SET settled_version = CASE WHEN "
                "ledger_loans.settled_version < excluded.settled_version THEN excluded.settled_version "
                "ELSE ledger_loans.settled_version END",
                (
                    event.lender_id,
                    event.loan_id,
                    event.currency,
                    event.loan_version,
                    to_micros(self.clock.now()),
                ),
            )

        outcome, funded = self._resolve_bids(event.bid_ids, Phase.POST, HoldingStatus.ACTIVE, funded_as_of)
        for h in funded:
            self.drift.record(h.portfolio_id, h.investor_id, h.loan_id)
        return outcome

    def on_bids_rolled_back(self, event: BidsRolledBack) -> BidsOutcome:
        """Void the listed bids' reservations: the investors' cash is available again."""
        outcome, _ = self._resolve_bids(event.bid_ids, Phase.VOID, HoldingStatus.ROLLED_BACK)
        return outcome

    # -- repayments and loan outcomes -------------------------------------------------------------------------

    def settle_loan(self, loan: Loan, version: int) -> RepaymentOutcome:
        """Distribute the payments of one version of a loan's tape to its holders and apply its status.

        Interest first, then principal, per payment, pro rata to the principal held (see
        :mod:`tranche.ledger.distribution` for the rounding rule); a written-off loan's remaining holdings become
        losses (code ``write_off``). A version is settled once: versions at or below the last settled one are
        skipped, so versions must be settled in order.
        """
        currency = loan.currency
        lender, loan_id = loan.lender_id, loan.loan_id
        settlement = chart.lender_settlement(lender, currency)
        principal_account = chart.loan_principal(lender, loan_id, currency)
        revenue = chart.platform_revenue(currency)
        touched: dict[str, _HoldingRow] = {}
        state: dict[str, Any] = {"skipped": False, "count": 0}

        def build(conn: Connection) -> list[Transfer]:
            touched.clear()
            sql = _Sql(conn)
            lock = "" if sql.sqlite else " FOR UPDATE"
            row = conn.exec_driver_sql(
                f"SELECT settled_version FROM ledger_loans WHERE lender_id = {sql.p} AND loan_id = {sql.p}{lock}",
                (lender, loan_id),
            ).first()
            if row is not None and int(row[0]) >= version:
                state["skipped"] = True
                return []
            rows = conn.exec_driver_sql(
                f"SELECT {_HOLDING_COLUMNS} FROM ledger_holdings WHERE lender_id = {sql.p} AND loan_id = {sql.p} "
                f"AND status IN ('{HoldingStatus.ACTIVE}', '{HoldingStatus.DEFAULTED}') ORDER BY bid_id",
                (lender, loan_id),
            ).all()
            holdings = [_holding_from_row(r) for r in rows]
            if not holdings:
                state["skipped"] = True
                return []
            balances = load_accounts(conn, [h.account_id for h in holdings], lock=True)
            held = {h.bid_id: balances[h.account_id].balance for h in holdings}
            by_bid = {h.bid_id: h for h in holdings}
            base = f"rp:{lender}:{loan_id}:{version}"
            transfers: list[Transfer] = []
            remaining = sum(p.principal for p in loan.payments)
            for k, payment in enumerate(loan.payments):
                outstanding_before = loan.outstanding_principal + remaining
                remaining -= payment.principal
                split = split_payment(
                    payment.principal,
                    payment.interest,
                    [Holder(b, held[b], by_bid[b].investor_rate, by_bid[b].lender_rate) for b in held],
                    outstanding_before,
                )
                for bid_id, amount in split.interest.items():
                    if amount:
                        cash = chart.investor_cash(by_bid[bid_id].investor_id, currency).id
                        transfers.append(
                            Transfer(
                                f"{base}:{k}:int:{bid_id}",
                                settlement.id,
                                cash,
                                amount,
                                currency,
                                Code.INTEREST,
                                loan_id,
                            )
                        )
                if split.margin:
                    transfers.append(
                        Transfer(
                            f"{base}:{k}:margin",
                            settlement.id,
                            revenue.id,
                            split.margin,
                            currency,
                            Code.MARGIN,
                            loan_id,
                        )
                    )
                for bid_id, amount in split.principal.items():
                    if amount:
                        h = by_bid[bid_id]
                        cash = chart.investor_cash(h.investor_id, currency).id
                        transfers.append(
                            Transfer(
                                f"{base}:{k}:pri:{bid_id}",
                                settlement.id,
                                cash,
                                amount,
                                currency,
                                Code.PRINCIPAL,
                                loan_id,
                            )
                        )
                        transfers.append(
                            Transfer(
                                f"{base}:{k}:hold:{bid_id}",
                                h.account_id,
                                principal_account.id,
                                amount,
                                currency,
                                Code.PRINCIPAL_HOLDING,
                                loan_id,
                            )
                        )
                        held[bid_id] -= amount
                        touched[bid_id] = h
            if loan.status is LoanStatus.WRITTEN_OFF:
                for bid_id, amount in held.items():
                    if amount > 0:
                        h = by_bid[bid_id]
                        transfers.append(
                            Transfer(
                                f"wo:{lender}:{loan_id}:{bid_id}",
                                h.account_id,
                                principal_account.id,
                                amount,
                                currency,
                                Code.WRITE_OFF,
                                loan_id,
                            )
                        )
                        held[bid_id] = 0
            if loan.status in (LoanStatus.WRITTEN_OFF, LoanStatus.DEFAULTED, LoanStatus.REPAID):
                touched.update(by_bid)
            state["count"] = len(transfers)
            state["holdings"] = holdings
            return _chain(transfers)

        def record(conn: Connection, plan: BatchPlan) -> None:
            if state["skipped"]:
                return
            error = _first_error(plan.results)
            if error is not None:
                raise error
            sql = _Sql(conn)
            p = sql.p
            now = to_micros(self.clock.now())
            status = {
                LoanStatus.REPAID: HoldingStatus.REPAID,
                LoanStatus.DEFAULTED: HoldingStatus.DEFAULTED,
                LoanStatus.WRITTEN_OFF: HoldingStatus.WRITTEN_OFF,
            }.get(loan.status)
            if status is not None:
                self._set_status(conn, [h.bid_id for h in state["holdings"]], status)
            conn.exec_driver_sql(
                "INSERT INTO ledger_loans (lender_id, loan_id, currency, status, outstanding_principal, "
                f"settled_version, updated_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}) "
                "ON CONFLICT (lender_id, loan_id) DO UPDATE SET status = excluded.status, "
                "outstanding_principal = excluded.outstanding_principal, "
                "settled_version = excluded.settled_version, updated_at = excluded.updated_at",
                (lender, loan_id, currency, loan.status.value, loan.outstanding_principal, version, now),
            )

        plan = self._transaction([settlement, principal_account, revenue], build, record)
        if not state["skipped"]:
            for h in touched.values():
                self.drift.record(h.portfolio_id, h.investor_id, h.loan_id)
        del plan
        return RepaymentOutcome(loan_id, version, state["count"], loan.status.value, state["skipped"])

    # -- notifications ----------------------------------------------------------------------------------------

    def due_drift(self) -> list[PortfolioDrifted]:
        """Portfolio changes whose aggregation window has passed; the caller publishes them to trading."""
        return self.drift.due()
