"""`python -m bench`: the whole benchmark run (see docs/benchmarks.md)."""

from bench.run import main

raise SystemExit(main())
