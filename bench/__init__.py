"""Benchmarks for exchanger (not tests: nothing here runs in the test suite).

`python -m bench` loads a bare Starlette + uvicorn app and `exchanger serve`
with `wrk` on loopback, in one run, and writes every result as a ratio
against the bare app measured in the same run (see docs/benchmarks.md).
"""
