"""Correlation: alert identity, dedup, and which incident an alert belongs to."""
