"""The ledger: double-entry accounts and transfers, settlement of matches, repayments, and reports.

Every cent that moves is a balanced, immutable, idempotent transfer (see :mod:`tranche.ledger.domain`);
:class:`tranche.ledger.adapters.SqlLedger` stores them in SQLite or PostgreSQL in batches.
"""
