"""Investors' portfolios and the gap analyzer that turns them into buy offers for the matcher."""
