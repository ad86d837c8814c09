"""Matching throughput: loan offers against portfolios' buckets, beside a bare per-rate FIFO matcher.

    python bench/matching.py            1,000,000 loan offers vs 10,000 portfolios
    python bench/matching.py --quick    100,000 vs 1,000

The market: 20 lenders in 8 countries; loans of 500-5,000 EUR (one in ten all-or-nothing) with borrower age,
credit score, income, risk group A-E, term and a rate of 5-20 %; each lender's margin is 1-2 %.
Portfolios have one to three buckets whose criteria are drawn from a catalogue of 300 strategies (investors
pick among presets: country sets, age/score/income/term bands, risk groups, lender lists, a minimum rate),
a minimum ticket of 10, 20 or 50 EUR and a per-loan cap of 3-15 tickets. Demand roughly equals supply.
Amounts are whole multiples of the market's 10 EUR unit, so no loan is left with dust no ticket can buy.

The run has three phases, as a market would: 20 % of the loans are offered before any demand (they rest),
then every bucket places its buy offer (which buys resting loans and sweeps the all-or-nothing ones), then
the other 80 % of the loans arrive and are sold to the resting demand. Reservations are in the loop, as in the
market role: loans arrive in slices of 1,000 (as intake's events carry them); the bids a slice places are
reserved with the ledger's in-memory port (:class:`tranche.trading.Cashbook`; each investor has cash for its
portfolio, one in twenty for half of it, so some bids are refused) and the answer is applied with
``Matcher.settle``: reserved bids confirmed, refused ones rolled back and offered again, an investor short of
cash losing its open demand. A fill is a confirmed bid.
Figures: fills (confirmed bids) per second of matcher time (wall, and per CPU second of the process, which the other
work on a shared machine does not skew), and the time to clear the market: until every offer has been
matched as far as it can be and the books are quiescent (every resting loan has been offered to every resting
buy offer that accepts it; what is left over no resting buy offer accepts with room to take a ticket).

The floor is a bare matcher over the same loans and buy offers: one FIFO queue per minimum rate and a
``SortedList`` of the distinct rates, whole tickets and the per-loan cap, no criteria, no events.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import sys
import time
from collections import deque
from decimal import Decimal
from pathlib import Path

from sortedcontainers import SortedList

from tranche.matching import (
    BuyOffer,
    Criteria,
    LoanFunded,
    LoanTraits,
    Matcher,
    MatchEvent,
    OfferMatched,
    SellOffer,
)
from tranche.trading import INSUFFICIENT_CASH, Cashbook

COUNTRIES = ["ES", "LV", "EE", "LT", "PL", "DE", "CZ", "RO"]
RISKS = ["A", "B", "C", "D", "E"]
LENDERS = [f"len_{i:02d}" for i in range(20)]
RATES = [Decimal(bp) / 10_000 for bp in range(500, 2001, 25)]
AON_SHARE = 0.1
MARGINS = {lender: Decimal(100 + 5 * i) / 10_000 for i, lender in enumerate(LENDERS)}
LENDER_COUNTRY = {lender: COUNTRIES[i % len(COUNTRIES)] for i, lender in enumerate(LENDERS)}
SLICE = 1_000  # loans per reservation round, as intake's events carry them


def catalogue(rng: random.Random, size: int) -> list[Criteria]:
    strategies: list[Criteria] = []
    for _ in range(size):
        age_lo = rng.choice([None, 18, 21, 25, 28, 30, 35])
        score_lo = rng.choice([None, None, 500, 600, 650, 700, 750])
        score_hi = rng.choice([None, None, 599, 649, 699]) if score_lo is None else None
        term_hi = rng.choice([None, 12, 24, 36, 48, 60])
        strategies.append(
            Criteria(
                countries=rng.choice([None, frozenset(rng.sample(COUNTRIES, rng.randint(1, 4)))]),
                age_min=age_lo,
                age_max=rng.choice([None, 35, 45, 55, 65]),
                score_min=score_lo,
                score_max=score_hi,
                income_min=rng.choice([None, None, 100_000, 150_000, 250_000]),
                risk_groups=rng.choice([None, frozenset(rng.sample(RISKS, rng.randint(1, 3)))]),
                term_min=rng.choice([None, None, 6, 12]),
                term_max=term_hi,
                lenders_in=rng.choice([None, None, None, frozenset(rng.sample(LENDERS, 8))]),
                lenders_not_in=rng.choice([frozenset(), frozenset(), frozenset(rng.sample(LENDERS, 2))]),
                min_investor_rate=rng.choice([Decimal(0), Decimal("0.04"), Decimal("0.06"), Decimal("0.08")]),
            )
        )
    return strategies


def make_buys(
    rng: random.Random, portfolios: int, strategies: list[Criteria], per_portfolio: int
) -> list[BuyOffer]:
    offers: list[BuyOffer] = []
    for p in range(portfolios):
        ticket = rng.choice([1_000, 2_000, 5_000])
        cap = ticket * rng.randint(3, 15)
        buckets = rng.randint(1, 3)
        total = per_portfolio * rng.randint(50, 150) // 100
        for b in range(buckets):
            amount = total // buckets
            offers.append(
                BuyOffer(
                    f"bo_{p}_{b}",
                    f"pf_{p}",
                    f"inv_{p}",
                    f"bkt_{p}_{b}",
                    1,
                    "EUR",
                    amount - amount % ticket,
                    ticket,
                    cap,
                    rng.choice(strategies),
                )
            )
    return offers


def make_sells(rng: random.Random, start: int, count: int) -> list[SellOffer]:
    offers: list[SellOffer] = []
    for n in range(start, start + count):
        lender = LENDERS[rng.randrange(20)]
        country = LENDER_COUNTRY[lender] if rng.random() < 0.8 else COUNTRIES[rng.randrange(8)]
        traits = LoanTraits(
            country,
            rng.randint(18, 75),
            rng.randint(300, 850),
            rng.randint(50_000, 800_000),
            RISKS[rng.randrange(5)],
            rng.choice((6, 12, 18, 24, 36, 48, 60)),
            lender,
        )
        offers.append(
            SellOffer(
                f"so_{n}",
                lender,
                f"loan_{n}",
                1,
                "EUR",
                rng.randint(50, 500) * 1_000,
                RATES[rng.randrange(len(RATES))],
                MARGINS[lender],
                rng.random() < AON_SHARE,
                traits,
            )
        )
    return offers


class BareMatcher:
    """The floor: per-rate FIFO queues of buy offers and a SortedList of distinct rates; no criteria."""

    def __init__(self) -> None:
        self.rates = SortedList()
        self.queues: dict[Decimal, deque[list[object]]] = {}
        self.fills: list[tuple[str, str, int]] = []

    def add_buy(self, offer: BuyOffer) -> None:
        rate = offer.criteria.min_investor_rate
        if rate not in self.queues:
            self.queues[rate] = deque()
            self.rates.add(rate)
        self.queues[rate].append([offer.buy_offer_id, offer.amount, offer.min_ticket, offer.per_loan_cap])

    def add_sell(self, offer: SellOffer) -> int:
        left = offer.amount
        fills = 0
        top = self.rates.bisect_right(offer.lender_rate - offer.margin)
        for index in range(top - 1, -1, -1):
            queue = self.queues[self.rates[index]]
            spent: list[list[object]] = []
            for entry in queue:
                buy_id, remaining, ticket, cap = entry
                amount = min(remaining, cap, left)  # type: ignore[type-var]
                amount -= amount % ticket  # type: ignore[operator]
                if amount <= 0:
                    continue
                self.fills.append((offer.offer_id, buy_id, amount))  # type: ignore[arg-type]
                entry[1] = remaining - amount  # type: ignore[operator]
                if entry[1] < ticket:  # type: ignore[operator]
                    spent.append(entry)
                left -= amount
                fills += 1
                if left < 1_000:
                    break
            for entry in spent:
                queue.remove(entry)
            if left < 1_000:
                break
        return fills


def run(loans: int, portfolios: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    strategies = catalogue(rng, 300)
    per_portfolio = loans * 2_750_00 // portfolios  # demand ~ supply (mean loan 2,750 EUR)
    buys = make_buys(rng, portfolios, strategies, per_portfolio)
    early = loans // 5
    chunk = 100_000

    # the tranche matcher, with the ledger's reservations in the loop
    matcher = Matcher()
    book = Cashbook(default_cash=0)
    cash_rng = random.Random(seed + 1)
    wants: dict[str, int] = {}
    for offer in buys:
        wants[offer.investor_id] = wants.get(offer.investor_id, 0) + offer.amount
    for investor, amount in wants.items():
        book.deposit(investor, "EUR", amount // 2 if cash_rng.random() < 0.05 else amount)
    fills = 0
    busy = 0.0
    cpu = 0.0
    funded = 0
    refused = 0
    phases: dict[str, dict[str, float]] = {}
    wall = time.perf_counter()

    def settle(events: list[MatchEvent]) -> tuple[int, int, int]:
        """Reserve what ``events`` placed and apply the answer, until no bid is left placed; returns the
        bids confirmed, the loans funded and the bids refused."""
        confirmed = loans_funded = refusals = 0
        pending = [e for e in events if type(e) is OfferMatched]
        while pending:
            answer = book.reserve(pending)
            refusals += len(answer.refused)
            short = (
                {
                    (bid.investor_id, m.currency)
                    for m in pending
                    for bid in m.bids
                    if answer.refused.get(bid.bid_id) == INSUFFICIENT_CASH
                }
                if answer.refused
                else set()
            )
            withdraw = [
                buy for investor, currency in sorted(short) for buy in matcher.buys_of(investor, currency)
            ]
            out = matcher.settle(pending, answer.reserved, answer.refused, withdraw)
            book.apply(out)
            for event in out:
                if type(event) is LoanFunded:
                    confirmed += len(event.bid_ids)
                    loans_funded += 1
            pending = [e for e in out if type(e) is OfferMatched]
        return confirmed, loans_funded, refusals

    def feed(start: int, count: int, name: str) -> None:
        nonlocal fills, busy, cpu, funded, refused
        phase_fills, phase_busy, phase_cpu = 0, 0.0, 0.0
        loan_rng = random.Random(seed * 7919 + start)
        done = 0
        while done < count:
            batch = make_sells(loan_rng, start + done, min(chunk, count - done))
            t0, c0 = time.perf_counter(), time.process_time()
            for first in range(0, len(batch), SLICE):
                events: list[MatchEvent] = []
                for offer in batch[first : first + SLICE]:
                    events += matcher.add_sell(offer)
                confirmed, loans_funded, refusals = settle(events)
                phase_fills += confirmed
                funded += loans_funded
                refused += refusals
            phase_busy += time.perf_counter() - t0
            phase_cpu += time.process_time() - c0
            matcher.drain_changes()
            done += len(batch)
        fills += phase_fills
        busy += phase_busy
        cpu += phase_cpu
        phases[name] = {
            "fills": phase_fills,
            "seconds": round(phase_busy, 3),
            "cpu_seconds": round(phase_cpu, 3),
        }

    gc.disable()
    feed(0, early, "loans before demand")
    t0, c0 = time.perf_counter(), time.process_time()
    buy_fills, loans_funded, refusals = settle(matcher.add_buys(buys))
    funded += loans_funded
    refused += refusals
    demand_busy = time.perf_counter() - t0
    demand_cpu = time.process_time() - c0
    matcher.drain_changes()
    fills += buy_fills
    busy += demand_busy
    cpu += demand_cpu
    phases["demand arrives"] = {
        "fills": buy_fills,
        "seconds": round(demand_busy, 3),
        "cpu_seconds": round(demand_cpu, 3),
    }
    feed(early, loans - early, "loans into resting demand")
    clear = time.perf_counter() - wall
    gc.enable()
    assert not matcher.unsettled(), "every placed bid was answered"
    unsold = len(matcher.open_sell_ids())
    open_buys = len(matcher.open_buy_ids())
    matcher = Matcher()  # let the books go before the floor runs
    gc.collect()

    # the floor: the same loans and buy offers through the bare matcher, all demand first
    bare = BareMatcher()
    for offer in buys:
        bare.add_buy(offer)
    bare_fills, bare_busy, bare_cpu = 0, 0.0, 0.0
    gc.disable()
    for start, count in ((0, early), (early, loans - early)):
        # regenerate exactly the stream the tranche matcher saw
        loan_rng = random.Random(seed * 7919 + start)
        produced = 0
        while produced < count:
            batch = make_sells(loan_rng, start + produced, min(chunk, count - produced))
            t0, c0 = time.perf_counter(), time.process_time()
            for offer in batch:
                bare_fills += bare.add_sell(offer)
            bare_busy += time.perf_counter() - t0
            bare_cpu += time.process_time() - c0
            produced += len(batch)
            bare.fills.clear()
    gc.enable()

    return {
        "loans": loans,
        "portfolios": portfolios,
        "buy_offers": len(buys),
        "strategies": len(strategies),
        "fills": fills,
        "matcher_seconds": round(busy, 3),
        "fills_per_second": round(fills / busy) if busy else 0,
        "matcher_cpu_seconds": round(cpu, 3),
        "fills_per_cpu_second": round(fills / cpu) if cpu else 0,
        "loans_per_second": round(loans / busy) if busy else 0,
        "time_to_clear_seconds": round(clear, 3),
        "loans_funded": funded,
        "bids_refused": refused,
        "loans_left_unsold": unsold,
        "buy_offers_left_open": open_buys,
        "phases": phases,
        "floor": {
            "name": "bare per-rate FIFO matcher (no criteria, no events, no reservations)",
            "fills": bare_fills,
            "seconds": round(bare_busy, 3),
            "fills_per_second": round(bare_fills / bare_busy) if bare_busy else 0,
            "cpu_seconds": round(bare_cpu, 3),
            "fills_per_cpu_second": round(bare_fills / bare_cpu) if bare_cpu else 0,
        },
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 loans vs 1,000 portfolios")
    parser.add_argument("--seed", type=int, default=20260101)
    args = parser.parse_args(argv)
    loans, portfolios = (100_000, 1_000) if args.quick else (1_000_000, 10_000)
    result = run(loans, portfolios, args.seed)
    result["quick"] = args.quick
    result["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    floor = result["floor"]
    assert isinstance(floor, dict)
    print(
        f"loan offers            {result['loans']:>12,}   portfolios {result['portfolios']:,} "
        f"({result['buy_offers']:,} buy offers, {result['strategies']} strategies)"
    )
    print(f"fills                  {result['fills']:>12,}   floor {floor['fills']:,}")
    print(
        f"fills/s                {result['fills_per_second']:>12,}   floor {floor['fills_per_second']:,}"
        f"   (target >= 300,000)"
    )
    print(
        f"fills per CPU second   {result['fills_per_cpu_second']:>12,}   floor {floor['fills_per_cpu_second']:,}"
        "   (what the process itself got, whatever else runs on the machine)"
    )
    print(f"matcher time (s)       {result['matcher_seconds']:>12}   floor {floor['seconds']}")
    print(f"time to clear (s)      {result['time_to_clear_seconds']:>12}   (wall, with offer generation)")
    print(
        f"loans funded           {result['loans_funded']:>12,}   unsold {result['loans_left_unsold']:,}, "
        f"buy offers still open {result['buy_offers_left_open']:,}, bids refused {result['bids_refused']:,}"
    )
    phases = result["phases"]
    assert isinstance(phases, dict)
    for name, figures in phases.items():
        print(
            f"  {name:<26} fills {figures['fills']:>11,}  in {figures['seconds']} s"
            f" ({figures['cpu_seconds']} s CPU)"
        )
    print(f"peak memory (MiB)      {result['max_rss_mib']:>12,}")
    out = Path(__file__).parent / "results" / "matching.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
