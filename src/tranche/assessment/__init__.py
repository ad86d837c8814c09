"""Assessment: a loan's projected cash flow and risk group, which it needs before it can be offered.

Modules (imported one by one, so that reading a projection does not load the HTTP stack):

- ``projection``  pure: the schedule of annuity, linear and bullet loans in integer minor units
  (``project_many``), the remaining-term rule, vectorised over slices with numpy;
- ``rules``       pure: the per-lender rule language for risk groups (A, B, C by default), checked with
  errors naming the field;
- ``domain``      pure: the ``Assessment`` record and ``assess_slice``;
- ``store``       versioned risk rules and append-only assessments over a SQLAlchemy ``Connection``;
- ``protocol``    the cash-flow service's JSON wire format;
- ``projectors``  ``BuiltinCashflowProjector``, ``HttpCashflowClient`` and ``make_cashflow_projector``;
- ``service``     the stand-alone cash-flow service with injectable faults (``tranche cashflow-service``);
- ``handlers``    project a slice, then record its assessments in the caller's transaction;
- ``stage``       the assess stage of a durable pipeline;
- ``errors``      the context's error tree.
"""
