"""Assessment: a loan's projected cash flow and risk group, which it needs before it can be offered."""
