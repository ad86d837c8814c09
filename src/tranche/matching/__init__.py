"""The matcher: order books of loan fractions (sell offers) against investors' buckets (buy offers).

Modules: ``criteria`` (what a bucket asks of a loan), ``book`` (the in-memory books, pure), ``offers``
(a sell offer from an assessed loan), ``events`` (what the ledger settles), ``record`` and ``adapters`` (the
durable offers and bids the books are rebuilt from), ``service`` (the books with their record).
"""
