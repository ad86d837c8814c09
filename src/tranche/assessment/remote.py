"""The HTTP client of an external cash-flow service (``TRANCHE_CASHFLOW_URL``).

It answers ``project_many(loans) -> list[Projection | LoanError]`` like the built-in projection, one result
per loan in order, and raises for a failed *call*, sorted for the pipeline:

- :class:`RetryableServiceError`: 429 (``retry_after`` from ``Retry-After``), 5xx, a timeout, a refused or
  dropped connection: the same call may pass later;
- :class:`TerminalServiceError`: any other 4xx, or an answer that breaks the protocol.

A loan the service refuses (a per-loan 400) is not a failed call: it comes back as a :class:`LoanError` with
the service's message, and its neighbours keep their projections.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx

from tranche.assessment.errors import LoanError, RetryableServiceError, TerminalServiceError
from tranche.assessment.projection import CashflowTerms, Projection
from tranche.assessment.protocol import decode_projection, encode_loan

__all__ = ["HttpCashflowClient", "parse_retry_after"]


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds (fractions accepted) or an HTTP date."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
    return max(seconds, 0.0) if seconds == seconds else None  # NaN is no answer


class HttpCashflowClient:
    """The external cash-flow service over HTTP (``TRANCHE_CASHFLOW_URL``), in batches of ``batch_size``.

    Thread-safe: one client (one connection pool) may serve every worker of a stage. A slice larger than a
    batch is sent as several calls; if any fails, the whole slice fails (projections are pure, so the retry
    of the slice repeats no side effect).
    """

    in_process = False

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 2.0,
        batch_size: int = 1000,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.batch_size = batch_size
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
            headers={"content-type": "application/json"},
        )

    def project_many(self, loans: Sequence[CashflowTerms]) -> list[Projection | LoanError]:
        results: list[Projection | LoanError] = []
        for start in range(0, len(loans), self.batch_size):
            results.extend(self._batch(loans[start : start + self.batch_size]))
        return results

    def _batch(self, loans: Sequence[CashflowTerms]) -> list[Projection | LoanError]:
        body = json.dumps({"loans": [encode_loan(loan) for loan in loans]}, separators=(",", ":"))
        try:
            response = self._http.post("/v1/projections", content=body)
        except httpx.TimeoutException as exc:
            raise RetryableServiceError(f"the cash-flow service timed out: {type(exc).__name__}") from exc
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            # Refused, reset or dropped connections: the service is down or restarting.
            raise RetryableServiceError(
                f"the cash-flow service is unreachable: {exc or type(exc).__name__}"
            ) from exc
        except httpx.HTTPError as exc:
            raise TerminalServiceError(f"cannot call the cash-flow service: {exc}") from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise RetryableServiceError(
                f"the cash-flow service answered {status}: {_message(response)}",
                retry_after=parse_retry_after(response.headers.get("retry-after")),
                status=status,
            )
        if status != 200:
            raise TerminalServiceError(
                f"the cash-flow service refused the call with {status}: {_message(response)}", status=status
            )
        return self._results(loans, response)

    def _results(
        self, loans: Sequence[CashflowTerms], response: httpx.Response
    ) -> list[Projection | LoanError]:
        try:
            answers = response.json()["results"]
        except (ValueError, KeyError, TypeError):
            raise TerminalServiceError("the cash-flow service answered without results", status=200) from None
        if not isinstance(answers, list) or len(answers) != len(loans):
            raise TerminalServiceError(
                f"the cash-flow service answered {len(answers) if isinstance(answers, list) else 'no'} "
                f"results for {len(loans)} loans",
                status=200,
            )
        results: list[Projection | LoanError] = []
        for loan, answer in zip(loans, answers, strict=True):
            status = answer.get("status") if isinstance(answer, dict) else None
            if status == 200:
                try:
                    projection = decode_projection(answer.get("projection"))
                except ValueError as exc:
                    raise TerminalServiceError(
                        f"{loan.lender_id}/{loan.loan_id}: {exc}", status=200
                    ) from None
                if (projection.lender_id, projection.loan_id) != (loan.lender_id, loan.loan_id):
                    raise TerminalServiceError("the cash-flow service answered out of order", status=200)
                results.append(projection)
            elif isinstance(status, int) and 400 <= status < 500 and status != 429:
                field = answer.get("field")
                results.append(
                    LoanError(
                        str(answer.get("message") or f"refused with {status}"),
                        lender_id=loan.lender_id,
                        loan_id=loan.loan_id,
                        field=field if isinstance(field, str) else None,
                    )
                )
            elif isinstance(status, int) and (status == 429 or status >= 500):
                raise RetryableServiceError(
                    f"the cash-flow service failed {loan.lender_id}/{loan.loan_id} with {status}",
                    status=status,
                )
            else:
                raise TerminalServiceError(
                    f"the cash-flow service answered a result without a status: {answer!r}"
                )
        return results

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpCashflowClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def _message(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return response.text[:200]
