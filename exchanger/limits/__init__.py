"""Abuse resistance: rate limits and single-use tokens, and the state behind them."""
