"""The ledger's flows: cash in and out, reservations for the market, funding and roll-back, repayments and
loan outcomes, expired reservations, and the drift notifications trading rebalances on.

Every flow is one transaction of the store (:meth:`LedgerStore.atomic`): it applies its transfers as one batch,
writes its holdings and loans beside them and publishes its events, all or nothing. Transfer ids derive from
what the flow was asked (``dep:<investor>:<key>``, ``bid:<bid>:cash``, ``rp:<lender>:<loan>:<version>:…``), so
asking twice changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta

from tranche.ledger import chart
from tranche.ledger.chart import Code
from tranche.ledger.domain import (
    MAX_AMOUNT,
    Account,
    AccountKind,
    Outcome,
    Phase,
    Transfer,
    TransferResult,
    to_micros,
)
from tranche.ledger.errors import (
    AmountOverflowError,
    IdempotencyKeyReusedError,
    InsufficientCashError,
    InvalidTransferError,
    LedgerError,
    LinkedTransferFailedError,
    OverdraftError,
    ReservationNotFoundError,
    TransferExistsError,
)
from tranche.ledger.messages import BidsReserved, CashAvailable, CashPosition, Refusal
from tranche.ledger.planning import BatchPlan
from tranche.ledger.repayment import LoanVersion, repayment_transfers
from tranche.ledger.store import RECEIVING, HoldingRow, HoldingStatus, LedgerStore, LedgerTransaction, LoanRow
from tranche.matching import BidsRolledBack, LoanFunded, OfferMatched
from tranche.shared.clock import Clock
from tranche.shared.money import Money, to_major


@dataclass(frozen=True, slots=True)
class CashMovement:
    """A deposit or a withdrawal as stored, with the investor's cash after it (minor units)."""

    transfer_id: str
    investor_id: str
    amount: int
    currency: str
    available: int
    balance: int


@dataclass(frozen=True, slots=True)
class BidsOutcome:
    """What funding or rolling back did per bid: ``done`` bid ids, and ``refused`` ones with the reason."""

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


def _money(amount: int, currency: str) -> str:
    return f"{to_major(amount, currency)} {currency}"


class LedgerService:
    """The ledger's use cases over a :class:`~tranche.ledger.store.LedgerStore`; built by the composition root."""

    def __init__(
        self,
        store: LedgerStore,
        clock: Clock,
        *,
        drift_window: timedelta = timedelta(seconds=30),
        reservation_timeout: timedelta | None = timedelta(days=14),
    ) -> None:
        self.store = store
        self.clock = clock
        self.drift_window_us = drift_window // timedelta(microseconds=1)
        self.reservation_timeout_us = (
            0 if reservation_timeout is None else reservation_timeout // timedelta(microseconds=1)
        )

    # -- investor cash ----------------------------------------------------------------------------------------

    def deposit(self, investor_id: str, money: Money, key: str) -> CashMovement:
        """Credit ``money`` to the investor's cash; ``key`` makes a retried request one deposit."""
        return self._cash(investor_id, money, key, deposit=True)

    def withdraw(self, investor_id: str, money: Money, key: str) -> CashMovement:
        """Pay ``money`` out of the investor's available cash; more than is available is an
        :class:`InsufficientCashError` and changes nothing."""
        return self._cash(investor_id, money, key, deposit=False)

    def _cash(self, investor_id: str, money: Money, key: str, *, deposit: bool) -> CashMovement:
        what = "deposit" if deposit else "withdrawal"
        _check_amount(money, investor_id, what)
        cash = chart.investor_cash(investor_id, money.currency)
        world = chart.world(money.currency)
        if deposit:
            transfer = Transfer(
                f"dep:{investor_id}:{key}", world.id, cash.id, money.amount, money.currency, Code.DEPOSIT
            )
        else:
            transfer = Transfer(
                f"wd:{investor_id}:{key}", cash.id, world.id, money.amount, money.currency, Code.WITHDRAWAL
            )

        def work(tx: LedgerTransaction) -> CashMovement:
            plan = tx.apply([transfer], [cash, world])
            [result] = plan.results
            if result.error is not None:
                raise _cash_error(result.error, investor_id, money, key, what)
            self._announce_cash(tx, plan)
            after = plan.after(cash.id)
            assert after is not None
            return CashMovement(
                transfer.id, investor_id, money.amount, money.currency, after.available, after.balance
            )

        return self.store.atomic(work)

    def pay_out_lender(self, lender_id: str, money: Money, key: str) -> Transfer:
        """The platform pays a lender what its settlement account holds (or more: the lender then owes it)."""
        settlement = chart.lender_settlement(lender_id, money.currency)
        world = chart.world(money.currency)
        return self._single(
            Transfer(
                f"payout:{lender_id}:{key}",
                settlement.id,
                world.id,
                money.amount,
                money.currency,
                Code.PAYOUT,
            ),
            [settlement, world],
        )

    def receive_from_lender(self, lender_id: str, money: Money, key: str) -> Transfer:
        """A lender pays the platform (repayments it collected, or a negative settlement balance)."""
        settlement = chart.lender_settlement(lender_id, money.currency)
        world = chart.world(money.currency)
        return self._single(
            Transfer(
                f"lpay:{lender_id}:{key}",
                world.id,
                settlement.id,
                money.amount,
                money.currency,
                Code.LENDER_PAYMENT,
            ),
            [settlement, world],
        )

    def _single(self, transfer: Transfer, accounts: list[Account]) -> Transfer:
        def work(tx: LedgerTransaction) -> None:
            error = tx.apply([transfer], accounts).first_error
            if error is not None:
                raise error

        self.store.atomic(work)
        return self.store.transfers([transfer.id])[transfer.id]

    # -- reservations for the market --------------------------------------------------------------------------

    def reserve(self, matches: Sequence[OfferMatched], *, request_id: str = "") -> BidsReserved:
        """Reserve each bid's cash and the holding it buys (pending transfers), in one transaction.

        A bid of a partial-funding match is reserved alone; the bids of an all-or-nothing match all or none. A
        bid reserved before answers reserved and changes nothing; a refused bid leaves nothing behind (no
        transfer, no account, no holding). See :mod:`tranche.ledger.messages` for the codes of refusals.
        """
        bid_ids = [b.bid_id for m in matches for b in m.bids]

        def work(tx: LedgerTransaction) -> BidsReserved:
            known = tx.holdings(bid_ids)
            transfers: list[Transfer] = []
            accounts: dict[str, Account] = {}
            chains: list[tuple[OfferMatched, list[str]]] = []  # the bids of each chain, in order
            reserved: list[str] = []
            refused: list[Refusal] = []
            for match in matches:
                fresh = [b for b in match.bids if b.bid_id not in known]
                for bid in match.bids:
                    row = known.get(bid.bid_id)
                    if row is None:
                        continue
                    if row.status in (HoldingStatus.ROLLED_BACK, HoldingStatus.EXPIRED):
                        refused.append(
                            Refusal(
                                bid.bid_id,
                                bid.investor_id,
                                "bid_closed",
                                f"bid {bid.bid_id} was reserved before and has been {row.status.value.replace('_', ' ')}; "
                                "a bid is reserved once",
                            )
                        )
                    else:
                        reserved.append(bid.bid_id)
                if not fresh:
                    continue
                currency = match.currency
                settlement = chart.lender_settlement(match.lender_id, currency)
                principal = chart.loan_principal(match.lender_id, match.loan_id, currency)
                accounts[settlement.id], accounts[principal.id] = settlement, principal
                groups = [fresh] if match.all_or_nothing else [[b] for b in fresh]
                for group in groups:
                    chain: list[Transfer] = []
                    for bid in group:
                        cash = chart.investor_cash(bid.investor_id, currency)
                        hold = chart.holding(
                            bid.bid_id, bid.investor_id, bid.portfolio_id, match.loan_id, currency
                        )
                        accounts[cash.id], accounts[hold.id] = cash, hold
                        chain += [
                            Transfer(
                                f"bid:{bid.bid_id}:cash",
                                cash.id,
                                settlement.id,
                                bid.amount,
                                currency,
                                Code.FUNDING,
                                match.loan_id,
                                Phase.PENDING,
                                timeout_us=self.reservation_timeout_us,
                                linked=True,
                            ),
                            Transfer(
                                f"bid:{bid.bid_id}:holding",
                                principal.id,
                                hold.id,
                                bid.amount,
                                currency,
                                Code.HOLDING,
                                match.loan_id,
                                Phase.PENDING,
                                timeout_us=self.reservation_timeout_us,
                                linked=True,
                            ),
                        ]
                    chain[-1] = replace(chain[-1], linked=False)
                    transfers += chain
                    chains.append((match, [b.bid_id for b in group]))
            plan = tx.apply(transfers, accounts.values())
            rows: list[HoldingRow] = []
            position = 0
            for match, chain_bids in chains:
                results = plan.results[position : position + 2 * len(chain_bids)]
                position += 2 * len(chain_bids)
                bids = {b.bid_id: b for b in match.bids}
                error = _first_error(results)
                if error is None:
                    for bid_id in chain_bids:
                        bid = bids[bid_id]
                        reserved.append(bid_id)
                        rows.append(
                            HoldingRow(
                                bid_id,
                                bid.investor_id,
                                bid.portfolio_id,
                                match.lender_id,
                                match.loan_id,
                                match.currency,
                                bid.amount,
                                bid.investor_rate,
                                bid.lender_rate,
                                HoldingStatus.RESERVED,
                            )
                        )
                    continue
                refused += _refusals(match, chain_bids, results)
            tx.add_holdings(rows)
            return BidsReserved(
                request_id,
                _ordered(bid_ids, reserved),
                _ordered_refusals(bid_ids, refused),
                _positions(tx, matches),
            )

        return self.store.atomic(work)

    # -- funding and roll-back --------------------------------------------------------------------------------

    def fund(self, event: LoanFunded) -> BidsOutcome:
        """Post the listed bids' reservations: cash goes to the lender's settlement, the investor holds the loan.
        A bid the ledger never reserved is refused with :class:`ReservationNotFoundError`."""
        outcome, _ = self._resolve(event.bid_ids, Phase.POST, HoldingStatus.ACTIVE, event)
        return outcome

    def roll_back(self, event: BidsRolledBack) -> BidsOutcome:
        """Void the listed bids' reservations: the investors' cash is available again. A bid the ledger never
        reserved has nothing to release and counts as done."""
        outcome, _ = self._resolve(event.bid_ids, Phase.VOID, HoldingStatus.ROLLED_BACK, None)
        return outcome

    def _resolve(
        self, bid_ids: Sequence[str], phase: Phase, status: HoldingStatus, funded: LoanFunded | None
    ) -> tuple[BidsOutcome, list[HoldingRow]]:
        def work(tx: LedgerTransaction) -> tuple[BidsOutcome, list[HoldingRow]]:
            found = tx.holdings(bid_ids)
            ordered = [b for b in bid_ids if b in found]
            make = Transfer.post if phase is Phase.POST else Transfer.void
            transfers: list[Transfer] = []
            for bid_id in ordered:
                h = found[bid_id]
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
            plan = tx.apply(transfers)
            done: list[str] = []
            refused: dict[str, LedgerError] = {}
            newly: list[HoldingRow] = []
            for index, bid_id in enumerate(ordered):
                results = plan.results[2 * index : 2 * index + 2]
                error = _first_error(results)
                if error is not None:
                    refused[bid_id] = error
                    continue
                done.append(bid_id)
                if results[0].outcome is Outcome.CREATED:
                    newly.append(found[bid_id])
            tx.update_holdings([h.bid_id for h in newly], status)
            for bid_id in bid_ids:
                if bid_id in found:
                    continue
                if funded is None:
                    done.append(bid_id)  # never reserved: nothing to release
                else:
                    refused[bid_id] = ReservationNotFoundError(
                        f"bid {bid_id} has no reservation in the ledger", record=bid_id, field="bid_id"
                    )
            if funded is not None and newly:
                tx.record_drift((h.portfolio_id, h.investor_id, h.loan_id) for h in newly)
                # The holders bought the loan as of this version: payments on it or on earlier tapes are not theirs.
                row = tx.loan(funded.lender_id, funded.loan_id)
                if row is None:
                    tx.put_loan(
                        LoanRow(
                            funded.lender_id,
                            funded.loan_id,
                            funded.currency,
                            "active",
                            None,
                            funded.loan_version,
                        )
                    )
                elif row.settled_version < funded.loan_version:
                    tx.put_loan(replace(row, settled_version=funded.loan_version))
            self._announce_cash(tx, plan)
            return BidsOutcome(tuple(done), refused), newly

        return self.store.atomic(work)

    # -- repayments and loan outcomes -------------------------------------------------------------------------

    def settle_loan(self, loan: LoanVersion) -> RepaymentOutcome:
        """Distribute the payments of one version of a loan's tape to its holders and apply its status.

        See :mod:`tranche.ledger.repayment`. A version is settled once: versions at or below the last settled
        one are skipped, so versions must be settled in order.
        """
        lender, loan_id, currency = loan.lender_id, loan.loan_id, loan.currency

        def work(tx: LedgerTransaction) -> RepaymentOutcome:
            skipped = RepaymentOutcome(loan_id, loan.version, 0, loan.status, skipped=True)
            row = tx.loan(lender, loan_id)
            if row is not None and row.settled_version >= loan.version:
                return skipped
            holdings = tx.holdings_of_loan(lender, loan_id, RECEIVING)
            if not holdings:
                return skipped
            balances = tx.accounts([h.account_id for h in holdings])
            held = {h.bid_id: balances[h.account_id].balance for h in holdings}
            repayment = repayment_transfers(loan, holdings, held)
            proposed = [
                chart.lender_settlement(lender, currency),
                chart.loan_principal(lender, loan_id, currency),
                chart.platform_revenue(currency),
            ]
            plan = tx.apply(repayment.transfers, proposed)
            error = plan.first_error
            if error is not None:
                raise error
            if repayment.status is not None:
                tx.update_holdings([h.bid_id for h in holdings], repayment.status, repayment.written_off)
            tx.put_loan(
                LoanRow(lender, loan_id, currency, loan.status, loan.outstanding_principal, loan.version)
            )
            self._announce_cash(tx, plan)
            by_bid = {h.bid_id: h for h in holdings}
            tx.record_drift(
                (by_bid[b].portfolio_id, by_bid[b].investor_id, by_bid[b].loan_id) for b in repayment.touched
            )
            return RepaymentOutcome(loan_id, loan.version, len(plan.created), loan.status)

        return self.store.atomic(work)

    # -- on a timer -------------------------------------------------------------------------------------------

    def expire_reservations(self, *, limit: int = 10_000) -> int:
        """Void the reservations whose timeout has passed (ids ``<pending id>~expired``, code ``expired``); the
        bids' holdings become ``expired``. Returns how many pending transfers were voided."""
        due = self.store.expired_pendings(to_micros(self.clock.now()), limit)
        if not due:
            return 0

        def work(tx: LedgerTransaction) -> int:
            voids = [Transfer.void(f"{t.id}~expired", t.id, t.currency, code=Code.EXPIRED) for t in due]
            plan = tx.apply(voids)
            voided = [t for t, r in zip(due, plan.results, strict=True) if r.outcome is Outcome.CREATED]
            bids = [
                t.id[len("bid:") : -len(":cash")]
                for t in voided
                if t.id.startswith("bid:") and t.id.endswith(":cash")
            ]
            found = tx.holdings(bids)
            tx.update_holdings(
                [b for b in bids if found.get(b) and found[b].status is HoldingStatus.RESERVED],
                HoldingStatus.EXPIRED,
            )
            self._announce_cash(tx, plan)
            return len(voided)

        return self.store.atomic(work)

    def publish_due_drift(self, *, limit: int = 10_000) -> int:
        """Publish the drift notifications whose window has passed (trading rebalances those portfolios):
        one per portfolio, folding every settlement step since its first change. Returns how many."""
        opened_until = to_micros(self.clock.now()) - self.drift_window_us
        if not self.store.drift_due(opened_until):
            return 0  # most ticks: no transaction (and no sync) for nothing

        def work(tx: LedgerTransaction) -> int:
            due = tx.take_drift(opened_until, limit)
            for event in due:
                tx.publish(event)
            return len(due)

        return self.store.atomic(work)

    # -- events -----------------------------------------------------------------------------------------------

    @staticmethod
    def _announce_cash(tx: LedgerTransaction, plan: BatchPlan) -> None:
        """Publish :class:`CashAvailable` for every investor's cash whose available amount the batch moved."""
        for account_id in plan.changed:
            before = plan.before[account_id]
            if before.kind is not AccountKind.INVESTOR_CASH or before.owner_id is None:
                continue
            after = plan.after(account_id)
            assert after is not None
            if after.available != before.available:
                tx.publish(CashAvailable(before.owner_id, before.currency, after.available))


def _check_amount(money: Money, investor_id: str, what: str) -> None:
    if money.amount < 1:
        raise InvalidTransferError(f"a {what} is positive", record=investor_id, field="amount")
    if money.amount > MAX_AMOUNT:
        raise AmountOverflowError(
            f"a {what} of {_money(money.amount, money.currency)} is more than the ledger keeps "
            f"({_money(MAX_AMOUNT, money.currency)})",
            record=investor_id,
            field="amount",
        )


def _cash_error(error: LedgerError, investor_id: str, money: Money, key: str, what: str) -> LedgerError:
    """The error of a deposit or withdrawal in the client's terms: the investor, the key, the field it sent."""
    if isinstance(error, OverdraftError):
        return InsufficientCashError(
            f"investor {investor_id} has {_money(error.available, money.currency)} available; the {what} asks for "
            f"{_money(money.amount, money.currency)}",
            record=investor_id,
            available=error.available,
            needed=money.amount,
        )
    if isinstance(error, TransferExistsError):
        field = error.field if error.field in ("amount", "currency") else "key"
        return IdempotencyKeyReusedError(
            f"idempotency key {key!r} was used for another {what} of investor {investor_id} (another {field})",
            record=key,
            field=field,
        )
    if isinstance(error, AmountOverflowError):
        return AmountOverflowError(
            f"a {what} of {_money(money.amount, money.currency)} would take a running total of the ledger past "
            f"{_money(MAX_AMOUNT, money.currency)}, the most it keeps",
            record=investor_id,
            field="amount",
        )
    return error


def _first_error(results: Iterable[TransferResult]) -> LedgerError | None:
    for result in results:
        if result.error is not None:
            return result.error
    return None


def _refusals(match: OfferMatched, group: list[str], results: Sequence[TransferResult]) -> list[Refusal]:
    """Why each bid of a refused chain was refused: the bid at fault with its own reason, the others (in an
    all-or-nothing match) because of it."""
    bids = {b.bid_id: b for b in match.bids}
    culprit: str | None = None
    reason = ""
    code = ""
    for index, result in enumerate(results):
        error = result.error
        if error is None or isinstance(error, LinkedTransferFailedError):
            continue
        culprit = group[index // 2]
        bid = bids[culprit]
        if isinstance(error, OverdraftError):
            code = "insufficient_cash"
            reason = (
                f"investor {bid.investor_id} has {_money(error.available, match.currency)} available; bid "
                f"{culprit} needs {_money(bid.amount, match.currency)}"
            )
        else:
            code, reason = error.code, f"bid {culprit}: {error.message}"
        break
    refusals = []
    for bid_id in group:
        bid = bids[bid_id]
        if bid_id == culprit:
            refusals.append(Refusal(bid_id, bid.investor_id, code, reason))
        else:
            refusals.append(
                Refusal(
                    bid_id,
                    bid.investor_id,
                    "all_or_nothing",
                    f"bid {bid_id} was not reserved: loan {match.loan_id} is sold all or nothing and bid {culprit} "
                    f"was refused ({code})",
                )
            )
    return refusals


def _ordered(bid_ids: Sequence[str], chosen: Iterable[str]) -> tuple[str, ...]:
    wanted = set(chosen)
    return tuple(dict.fromkeys(b for b in bid_ids if b in wanted))


def _ordered_refusals(bid_ids: Sequence[str], refusals: Iterable[Refusal]) -> tuple[Refusal, ...]:
    by_bid = {r.bid_id: r for r in refusals}
    return tuple(by_bid[b] for b in dict.fromkeys(bid_ids) if b in by_bid)


def _positions(tx: LedgerTransaction, matches: Sequence[OfferMatched]) -> tuple[CashPosition, ...]:
    named = dict.fromkeys((b.investor_id, m.currency) for m in matches for b in m.bids)
    accounts = tx.accounts(chart.investor_cash(i, c).id for i, c in named)
    positions = []
    for investor_id, currency in named:
        account = accounts.get(chart.investor_cash(investor_id, currency).id)
        positions.append(CashPosition(investor_id, currency, 0 if account is None else account.available))
    return tuple(positions)
