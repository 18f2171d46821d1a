"""The results as markdown: targets first, then every table they come from."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.load import LoadResult
    from bench.run import Measured, Results

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"
REFRESH_WINDOW = 300.0  # exchanger.jwks.REFRESH_INTERVAL
TIMES = "\u00d7"  # the multiplication sign of ratios


def write(path: Path, text: str) -> None:
    """Replace the generated block of `path` (between the markers), or create the file."""
    block = f"{START}\n{text.rstrip()}\n{END}\n"
    if path.exists():
        current = path.read_text(encoding="utf-8")
        if START in current and END in current:
            head, _, rest = current.partition(START)
            _, _, tail = rest.partition(END)
            path.write_text(head + block + tail.lstrip("\n"), encoding="utf-8")
            return
        path.write_text(current.rstrip() + "\n\n" + block, encoding="utf-8")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Benchmarks\n\n" + block, encoding="utf-8")


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _x(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}{TIMES}"


def _ms(result: LoadResult) -> str:
    return f"{result.p50_ms:.2f} / {result.p99_ms:.2f}"


def _mb(values: Sequence[float]) -> str:
    return "/".join(f"{v:.0f}" for v in values) or "?"


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out.extend("| " + " | ".join(row) + " |" for row in rows)
    return out


def _find(results: Results, key: str, workers: int) -> Measured | None:
    for m in results.measured:
        if m.scenario.key == key and m.workers == workers:
            return m
    return None


def _calls_per_exchange(m: Measured) -> float:
    return _ratio(sum(m.upstream.values()), m.statuses.get(200, 0))


def render(results: Results, argv: Sequence[str]) -> str:
    s = results.settings
    lines = [
        "## Results",
        "",
        f"Run of {results.started:%Y-%m-%d %H:%M} UTC, {results.seconds / 60:.1f} minutes, "
        "reproduced with:",
        "",
        "```sh",
        " ".join(["python -m bench", *map(shlex.quote, argv)]).rstrip(),
        "```",
        "",
        f"Every run: `wrk -t1 -c{s.connections}`, {s.duration:g} s measured after "
        f"{s.warmup:g} s of warm-up, tokens rotating through a pool of {s.pool:,} distinct "
        "pre-minted RS256 tokens; plain HTTP on 127.0.0.1; both servers under `uvicorn.run` "
        "with the same settings (loop and http `auto`: uvloop, httptools). Ratios are "
        "exchanger ÷ bare from this run.",
        "",
        "### Targets",
        "",
    ]
    lines += _table(["target", "measured", ""], _targets(results))
    for workers in s.workers:
        lines += ["", f"### Exchanges against bare Starlette, {workers} worker(s)", ""]
        rows = []
        for m in results.measured:
            if m.workers != workers:
                continue
            calls = (
                f"{_calls_per_exchange(m):.3f}"
                if m.scenario.key in ("installation", "runner")
                else str(sum(m.upstream.values()))
            )
            rows.append(
                [
                    m.scenario.title,
                    f"{m.bare.rps:,.0f}",
                    f"{m.exchanger.rps:,.0f}",
                    _x(_ratio(m.exchanger.rps, m.bare.rps)),
                    _ms(m.bare),
                    _ms(m.exchanger),
                    _x(_ratio(m.exchanger.p50_ms, m.bare.p50_ms)),
                    _x(_ratio(m.exchanger.p99_ms, m.bare.p99_ms)),
                    f"{_mb(m.bare_rss)} / {_mb(m.exchanger_rss)}",
                    ", ".join(f"{k}: {v:,}" for k, v in sorted(m.statuses.items())),
                    calls,
                ]
            )
        lines += _table(
            [
                "scenario", "bare req/s", "exchanger req/s", "req/s ratio",
                "bare p50 / p99 ms", "exchanger p50 / p99 ms", "p50 ratio", "p99 ratio",
                "RSS per worker MB (bare / exchanger)", "exchanger answers",
                "GitHub calls per exchange",
            ],
            rows,
        )  # fmt: skip
    control = results.control
    lines += [
        "",
        f"Peak p99s are saturation artefacts: {s.connections} connections queue on each "
        "event loop and uvicorn serves them unevenly."
        + (
            f" For comparison, the control below (a bare app burning {control.busy_us:.0f} µs "
            f"per request, exchanger's extra CPU) at its own peak: p50 / p99 "
            f"{_ms(control.peak)} ms at {control.peak.rps:,.0f} req/s."
            if control is not None
            else ""
        ),
        "",
        "Installation and runner exchanges include the fake GitHub's fixed 50 ms per call, "
        f"so with {s.connections} connections they cannot exceed "
        f"{s.connections / 0.05:,.0f} req/s; their ratios against a bare app that answers at "
        "once measure that latency, not the gateway.",
        "",
        "### Latency at half of exchanger's peak (secret exchange)",
        "",
    ]
    lines += _table(
        [
            "workers", "offered req/s", "bare achieved", "exchanger achieved",
            "bare p50 / p99 ms", "exchanger p50 / p99 ms", "p99 ratio",
        ],
        [
            [
                str(h.workers), f"{h.target_rps:,.0f}", f"{h.bare.rps:,.0f}",
                f"{h.exchanger.rps:,.0f}", _ms(h.bare), _ms(h.exchanger),
                _x(_ratio(h.exchanger.p99_ms, h.bare.p99_ms)),
            ]
            for h in results.half
        ],
    )  # fmt: skip
    if control is not None and results.half:
        first = results.half[0]
        lines += [
            "",
            f"Control at the same offered load ({first.target_rps:,.0f} req/s, 1 worker): a "
            f"bare app burning {control.busy_us:.0f} µs per request answers at p50 / p99 "
            f"{_ms(control.half)} ms, a p99 ratio of "
            f"{_x(_ratio(control.half.p99_ms, first.bare.p99_ms))} to the plain bare app: "
            "queueing behind that much CPU per request costs this much on its own.",
        ]
    lines += [
        "",
        f"Each of the {s.connections} connections waits an exponentially distributed time "
        "(mean: connections ÷ offered rate) between a response and its next request.",
        "",
        "### Policies (secret exchange, 1 worker)",
        "",
    ]
    base = results.policy_runs[0] if results.policy_runs else None
    rows = []
    for run in results.policy_runs:
        assert base is not None
        rows.append(
            [
                f"{run.policies:,}", f"{run.startup_seconds:.1f}", f"{run.peak.rps:,.0f}",
                _x(_ratio(run.peak.rps, base.peak.rps)), f"{run.fixed_rps:,.0f}",
                _ms(run.fixed), _x(_ratio(run.fixed.p50_ms, base.fixed.p50_ms)),
                _x(_ratio(run.fixed.p99_ms, base.fixed.p99_ms)),
                _x(_ratio(base.peak.rps, run.peak.rps)), _mb(run.rss),
            ]
        )  # fmt: skip
    lines += _table(
        [
            "policies", "start-up s", "peak req/s", "peak ratio", "fixed load req/s",
            "p50 / p99 ms at fixed load", "p50 ratio", "p99 ratio", "CPU per request ratio",
            "RSS per worker MB",
        ],
        rows,
    )  # fmt: skip
    lines += [
        "",
        "The three servers run side by side and are loaded one at a time, in the order "
        "10, 1,000, 10,000 and back: peak figures are the faster of the two runs, fixed-load "
        "figures their mean. The latency target is judged on p50 at the fixed load and on "
        "CPU per request; p99 over 20 s moves by a third from run to run on this machine. "
        "Start-up is from spawning `exchanger serve` to `/readyz` answering "
        "200; it includes loading the policies twice (`serve` validates the config before "
        "uvicorn builds the app from it). CPU per request ratio is the inverse of the peak "
        "ratio.",
    ]
    memory = results.memory
    if memory is not None:
        lines += [
            "",
            f"With {memory.workers} workers and {memory.policies:,} policies, after load: "
            f"{_mb(memory.rss)} MB per worker; uvicorn's supervisor, which holds only "
            f"`serve`'s validation copy of the config, {memory.supervisor:.0f} MB. With one "
            "worker the single process is both, so its figure above includes that copy too.",
        ]
    scaling = results.scaling
    if scaling is not None:
        lines += ["", "### Workers (secret exchange, peak)", ""]
        lines += _table(
            ["server", f"{scaling.few} worker(s) req/s", f"{scaling.many} workers req/s",
             "scaling", "p50 / p99 ms"],
            [
                [
                    "exchanger", f"{scaling.one.rps:,.0f}", f"{scaling.more.rps:,.0f}",
                    _x(_ratio(scaling.more.rps, scaling.one.rps)),
                    f"{_ms(scaling.one)} → {_ms(scaling.more)}",
                ],
                *_bare_scaling(results),
            ],
        )  # fmt: skip
        lines += [
            "",
            "Both exchanger processes run side by side and are loaded alternately "
            f"({scaling.few}, {scaling.many}, {scaling.many}, {scaling.few} workers; each "
            "figure is the faster of its two runs). The bare row comes from the tables above; "
            "with two workers the bare app is limited by wrk's own share of the two cores.",
        ]
    lines += ["", "### Upstream calls and JWKS fetches", ""]
    rows = []
    for m in results.measured:
        if m.scenario.key not in ("installation", "runner"):
            continue
        agrees = (
            "n/a (per-worker counters)"
            if m.metrics_upstream is None
            else ("yes" if m.metrics_upstream == sum(m.upstream.values()) else
                  f"no ({m.metrics_upstream:.0f})")
        )  # fmt: skip
        rows.append(
            [
                m.scenario.title, str(m.workers), f"{m.statuses.get(200, 0):,}",
                f"{sum(m.upstream.values()):,}",
                ", ".join(f"`{k}` {v:,}" for k, v in m.upstream.most_common()),
                f"{_calls_per_exchange(m):.3f}", agrees,
            ]
        )  # fmt: skip
    lines += _table(
        [
            "scenario", "workers", "exchanges (200)", "GitHub calls", "by operation",
            "per exchange", "/metrics agrees",
        ],
        rows,
    )  # fmt: skip
    lines += [""]
    lines += _table(
        ["gateway process", "workers", "lived s", "JWKS fetches", "per worker per 5-min window"],
        [
            [
                j.server, str(j.workers), f"{j.seconds:.0f}", str(j.fetches),
                f"{_jwks_rate(j.fetches, j.workers, j.seconds):.2f}",
            ]
            for j in results.jwks
        ],
    )  # fmt: skip
    total = sum(j.fetches for j in results.jwks)
    lines += [
        "",
        f"JWKS fetches during the whole run: {total} counted in the gateways' logs, "
        f"{results.jwks_served} served by the fake issuer. Each worker fetches once at "
        "start-up and then every 5 minutes (and on an unknown `kid`, at most once a minute).",
        "",
        "### Environment",
        "",
        ", ".join(f"{k} {v}" for k, v in results.environment.items()),
    ]
    return "\n".join(lines) + "\n"


def _jwks_rate(fetches: int, workers: int, seconds: float) -> float:
    windows = max(1, math.ceil(seconds / REFRESH_WINDOW))
    return fetches / (workers * windows)


def _bare_scaling(results: Results) -> list[list[str]]:
    workers = results.settings.workers
    one, many = _find(results, "secret", workers[0]), _find(results, "secret", workers[-1])
    if one is None or many is None:
        return []
    return [
        [
            "bare", f"{one.bare.rps:,.0f}", f"{many.bare.rps:,.0f}",
            _x(_ratio(many.bare.rps, one.bare.rps)), f"{_ms(one.bare)} → {_ms(many.bare)}",
        ]
    ]  # fmt: skip


def _targets(results: Results) -> list[list[str]]:
    rows: list[list[str]] = []
    workers = results.settings.workers
    for w in workers:
        m = _find(results, "secret", w)
        if m is not None:
            r = _ratio(m.exchanger.rps, m.bare.rps)
            rows.append(
                [
                    f"secret exchange req/s ≥ 0.4{TIMES} bare, {w} worker(s)",
                    _x(r),
                    _verdict(r >= 0.4),
                ]
            )
    for h in results.half:
        r = _ratio(h.exchanger.p99_ms, h.bare.p99_ms)
        rows.append(
            [
                f"p99 at half of exchanger's peak ≤ 3{TIMES} bare p99, {h.workers} worker(s)",
                f"{_x(r)} ({h.exchanger.p99_ms:.2f} vs {h.bare.p99_ms:.2f} ms "
                f"at {h.target_rps:,.0f} req/s)",
                _verdict(r <= 3),
            ]
        )
    runs = results.policy_runs
    if len(runs) > 1:
        base, last = runs[0], runs[-1]
        p50 = _ratio(last.fixed.p50_ms, base.fixed.p50_ms)
        p99 = _ratio(last.fixed.p99_ms, base.fixed.p99_ms)
        cpu = _ratio(base.peak.rps, last.peak.rps)
        rows.append(
            [
                f"{last.policies:,} policies ≤ 1.3{TIMES} the latency of {base.policies:,}",
                f"p50 {_x(p50)}, p99 {_x(p99)} at {base.fixed_rps:,.0f} req/s; "
                f"CPU per request {_x(cpu)}",
                _verdict(p50 <= 1.3 and cpu <= 1.3),
            ]
        )
        memory = results.memory
        if memory is not None:
            rss = max(memory.rss) if memory.rss else math.nan
            rows.append(
                [
                    f"RSS per worker with {memory.policies:,} policies ≤ 120 MB",
                    f"{rss:.0f} MB per worker ({memory.workers} workers)",
                    _verdict(rss <= 120),
                ]
            )
        single = max(last.rss) if last.rss else math.nan
        rows.append(
            [
                "… with one worker (its process also holds `serve`'s validation copy)",
                f"{single:.0f} MB",
                _verdict(single <= 120),
            ]
        )
    scaling = results.scaling
    if scaling is not None:
        r = _ratio(scaling.more.rps, scaling.one.rps)
        rows.append(
            [
                f"{scaling.many} workers ≥ 1.7{TIMES} {scaling.few} (secret exchange req/s)",
                _x(r),
                _verdict(r >= 1.7),
            ]
        )
    for key in ("installation", "runner"):
        per = [_calls_per_exchange(m) for m in results.measured if m.scenario.key == key]
        if per:
            rows.append(
                [
                    f"exactly one GitHub call per {key} exchange (steady state)",
                    ", ".join(f"{p:.3f}" for p in per),
                    _verdict(all(abs(p - 1) < 1e-9 for p in per)),
                ]
            )
    if results.jwks:
        worst = max(_jwks_rate(j.fetches, j.workers, j.seconds) for j in results.jwks)
        rows.append(
            [
                "≤ 1 JWKS fetch per issuer per refresh window (per worker)",
                f"at most {worst:.2f}",
                _verdict(worst <= 1),
            ]
        )
    return rows
