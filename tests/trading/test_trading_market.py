"""The market role with the ledger's reservations in the loop: a bid becomes an investment only once the
ledger reserved the investor's cash, and nothing the ledger refuses is left stranded."""

from __future__ import annotations

from markets import Harness, check_invariants, loan_offer, one_bucket

from tranche.matching import BidsRolledBack, LoanFunded, OfferMatched
from tranche.trading import Cashbook

EUR = "EUR"


def ten_loans_and_an_all_or_nothing_one() -> list:
    return [loan_offer(f"L{n}", 10_000) for n in range(10)] + [loan_offer("AON", 20_000, aon=True)]


def sold_to(h: Harness, portfolio_id: str) -> dict[str, int]:
    funded = {b for e in h.events if isinstance(e, LoanFunded) for b in e.bid_ids}
    out: dict[str, int] = {}
    for event in h.events:
        if isinstance(event, OfferMatched):
            for bid in event.bids:
                if bid.bid_id in funded and bid.portfolio_id == portfolio_id:
                    out[event.loan_id] = out.get(event.loan_id, 0) + bid.amount
    return out


def test_an_investor_short_of_cash_buys_only_what_it_can_pay_and_waits_for_cash() -> None:
    h = Harness(Cashbook(default_cash=0))
    h.book.deposit("ann", EUR, 10_000)  # 100.00 EUR
    ann = h.trading.create("ann", one_bucket(total=200_000, cap=10_000))  # 2,000.00, 100.00 per loan
    h.rebalance()
    h.offer(*ten_loans_and_an_all_or_nothing_one())
    check_invariants(h)
    assert sum(sold_to(h, ann.portfolio_id).values()) == 10_000
    view = h.trading.view(ann.portfolio_id)
    assert (view.invested, view.wanted, view.state) == (10_000, 0, "insufficient_cash")

    h.book.deposit("ann", EUR, 30_000)
    h.cash_changed("ann")
    check_invariants(h)
    assert sum(sold_to(h, ann.portfolio_id).values()) == 40_000
    assert h.trading.view(ann.portfolio_id).state in ("active", "insufficient_cash")


def test_what_a_refused_investor_could_not_pay_goes_back_on_offer_and_an_investor_with_cash_buys_it() -> None:
    h = Harness(Cashbook(default_cash=0))
    h.book.deposit("ann", EUR, 200_000)
    ann = h.trading.create("ann", one_bucket(total=200_000, cap=10_000, tranche="100"))
    h.rebalance()  # ann's demand of 2,000.00 rests in the book, planned while she had the cash
    h.book.cash[("ann", EUR)] = 10_000  # then she withdraws all but 100.00 before any loan arrives
    h.offer(*ten_loans_and_an_all_or_nothing_one())
    check_invariants(h)
    refused = [e for e in h.events if isinstance(e, BidsRolledBack) and e.reason == "insufficient_cash"]
    assert refused, "the ledger refused ann's bids beyond her cash"
    assert sum(sold_to(h, ann.portfolio_id).values()) == 10_000
    assert h.market.matching.buys_of("ann", EUR) == []  # her demand shrank to what she can pay: nothing

    h.book.deposit("bob", EUR, 1_000_000)
    bob = h.trading.create("bob", one_bucket(total=500_000, cap=50_000, tranche="100"))
    h.changed(bob.portfolio_id, "created")
    check_invariants(h)
    assert sold_to(h, bob.portfolio_id) == {
        **{f"L{n}": 10_000 for n in range(10) if f"L{n}" not in sold_to(h, ann.portfolio_id)},
        "AON": 20_000,
    }


def test_an_all_or_nothing_loan_whose_chain_one_investor_cannot_pay_is_sold_to_nobody_until_it_fills() -> (
    None
):
    h = Harness(Cashbook(default_cash=0))
    for name in ("ann", "bob"):
        h.book.deposit(name, EUR, 10_000)
        h.trading.create(name, one_bucket(total=10_000, cap=10_000, tranche="100"))
    h.rebalance()
    h.book.cash[("bob", EUR)] = 5_000  # bob cannot pay his half any more
    h.offer(loan_offer("AON", 20_000, aon=True))
    check_invariants(h)
    assert not any(isinstance(e, LoanFunded) for e in h.events)
    assert h.market.matching.matcher.sell_remaining("len_es/AON/v1") == 20_000

    h.book.deposit("bob", EUR, 5_000)
    h.cash_changed("bob")
    check_invariants(h)
    funded = [e for e in h.events if isinstance(e, LoanFunded) and e.loan_id == "AON"]
    assert sum(len(e.bid_ids) for e in funded) == 2
    assert not h.market.matching.matcher.has_sell("len_es/AON/v1")  # sold out


def test_while_the_ledger_cannot_answer_no_bid_is_confirmed_and_the_next_step_settles_them() -> None:
    h = Harness(Cashbook())
    h.trading.create("ann", one_bucket(total=100_000, cap=10_000, tranche="100"))
    h.rebalance()
    h.book.down = True
    try:
        h.offer(loan_offer("L1", 10_000))
    except Exception as error:  # the handler fails; the bus will deliver the event again
        assert type(error).__name__ == "LedgerUnavailableError"
    assert not any(isinstance(e, LoanFunded) for e in h.events)
    assert h.market.matching.matcher.unsettled()
    h.book.down = False
    h.settle_unsettled()
    check_invariants(h)
    assert any(isinstance(e, LoanFunded) and e.loan_id == "L1" for e in h.events)


def test_the_same_loans_offered_twice_change_nothing_the_second_time() -> None:
    h = Harness(Cashbook())
    h.trading.create("ann", one_bucket(total=100_000, cap=10_000, tranche="100"))
    h.rebalance()
    loans = ten_loans_and_an_all_or_nothing_one()
    h.offer_all(loans)
    before = h.market.matching.matcher.snapshot()
    assert h.offer_all(loans) == []  # a redelivered loan.<lender>.assessed
    assert h.market.matching.matcher.snapshot() == before
    live = [h.market.matching.live_offer_of("len_es", o.loan_id) for o in loans]
    assert all(offer_id in (None, o.offer_id) for offer_id, o in zip(live, loans, strict=True))
    check_invariants(h)


def test_loans_taken_off_twice_are_taken_off_once() -> None:
    h = Harness(Cashbook())
    h.offer(loan_offer("L1", 10_000))
    assert h.market.matching.live_offer_of("len_es", "L1") == "len_es/L1/v1"
    h.take_off("len_es", ["L1"], "repaid")
    assert h.take_off("len_es", ["L1"], "repaid") == []
    assert h.market.matching.live_offer_of("len_es", "L1") is None
    assert h.offer(loan_offer("L1", 10_000)) == []  # the withdrawn version is never offered again
