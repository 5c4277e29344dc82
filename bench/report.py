"""Write a benchmark run as JSON, a Markdown table and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path

GIB = 2**30
RSS_LIMIT = 8 * GIB


def _m(rate: float) -> str:
    return f"{rate / 1e6:.2f} M rows/s"


def _gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def _samples(timed: dict) -> str:
    """The seconds of every run timed (one, in results written before medians), and the CPU
    loop's seconds before them where recorded."""
    runs = " / ".join(f"{s:.1f}" for s in timed.get("samples", [timed["seconds"]]))
    cpu = timed.get("cpu_samples")
    return f"{runs}; CPU loop {min(cpu):.2f}-{max(cpu):.2f} s" if cpu else runs


def _row(figure: str, value: str, target: str = "", ok: bool | None = None) -> str:
    status = "" if ok is None else ("OK" if ok else "MISSED")
    return f"| {figure} | {value} | {target} | {status} |"


def _throughput_rows(t: dict, label: str) -> list[str]:
    sf = f"SF{t['scale_factor']}, {t['rows']:,} rows, {t['files']} files"
    rss = max(t["bronze"]["peak_rss"], t["silver"]["peak_rss"])
    return [
        _row(
            f"{label}floor: polars scan_csv -> sink_parquet ({sf})",
            f"{_m(t['floor']['rows_per_s'])} ({t['floor']['seconds']:.1f} s)",
        ),
        _row(
            f"{label}bronze ingest",
            f"{_m(t['bronze']['rows_per_s'])} ({t['bronze']['seconds']:.1f} s) "
            f"= {t['bronze']['ratio_to_floor']:.2f}x floor",
            ">= 0.6x",
            t["bronze"]["ratio_to_floor"] >= 0.6,
        ),
        _row(
            f"{label}silver alone",
            f"{_m(t['silver']['rows_per_s'])} ({t['silver']['seconds']:.1f} s)",
        ),
        _row(
            f"{label}bronze + silver",
            f"{_m(t['bronze_silver']['rows_per_s'])} "
            f"= {t['bronze_silver']['ratio_to_floor']:.2f}x floor",
            ">= 0.35x",
            t["bronze_silver"]["ratio_to_floor"] >= 0.35,
        ),
        _row(
            f"{label}peak RSS floor / bronze / silver",
            f"{_gib(t['floor']['peak_rss'])} / {_gib(t['bronze']['peak_rss'])} / {_gib(t['silver']['peak_rss'])}",
            "<= 8 GiB" if t["scale_factor"] >= 10 else "",
            rss <= RSS_LIMIT if t["scale_factor"] >= 10 else None,
        ),
    ]


def table(meta: dict, figures: dict) -> str:
    lines = [
        f"Benchmark run {meta['started_at']} at commit {meta['git_commit']} on {meta['machine']}"
        + (" (quick smoke run: less data)" if meta.get("quick") else "")
        + (f", {meta['seconds'] / 60:.1f} min" if "seconds" in meta else "")
        + "".join(
            f"; {name} from the run at commit {commit}"
            for name, commit in meta.get("carried_over", {}).items()
        ),
        "",
        "| figure | value | target | status |",
        "|---|---|---|---|",
    ]
    if "throughput" in figures:
        lines += _throughput_rows(figures["throughput"], "")
    inc = figures.get("incremental")
    if inc:
        hs = inc["histories"]
        for layer, src in (("bronze", "lineitem"), ("silver", "lineitem"), ("gold", "jaffle")):
            key = f"{layer}_seconds"
            times = " / ".join(f"{inc[src][h][key]:.2f}" for h in hs)
            lines.append(
                _row(
                    f"incremental {layer} ({'TPC-H lineitem' if src == 'lineitem' else 'Jaffle Shop dbt'}): "
                    f"one new day with {' / '.join(map(str, hs))} days held",
                    f"{times} s; ratio {inc['ratio'][layer]:.2f}",
                    "<= 1.3",
                    inc["ratio"][layer] <= 1.3,
                )
            )
        g = inc["gold_full"]
        lines.append(
            _row(
                f"gold dbt time (Dagster run, Jaffle Shop, {g['days']} days)",
                f"{g['seconds']:.1f} s, peak RSS {_gib(g['peak_rss'])}",
            )
        )
    bf = figures.get("backfill")
    if bf:
        lines.append(
            _row(
                f"backfill {bf['days']} days through Dagster: one run vs one run per day",
                f"{bf['single_run_seconds']:.1f} s vs {bf['per_day_sum_seconds']:.1f} s = {bf['ratio']:.2f}x; "
                f"per-run overhead {bf['per_run_overhead_seconds']:.2f} s",
                "<= 1.5x",
                bf["ratio"] <= 1.5,
            )
        )
    rr = figures.get("rerun")
    if rr:
        lines.append(
            _row(
                f"no-op rerun of `lakehouse materialize` over {rr['days']} days vs the first load",
                f"{rr['rerun_seconds']:.1f} s vs {rr['first_seconds']:.1f} s = {rr['ratio']:.3f}; "
                f"{rr['new_versions']} new Delta version(s) over {rr['tables']} tables",
                "<= 0.05, 0 versions",
                rr["ratio"] <= 0.05 and rr["new_versions"] == 0,
            )
        )
    big = figures.get("bigfile")
    if big:
        lines.append(
            _row(
                f"bronze over one {big['file_bytes'] / 2**30:.2f} GiB CSV with one bad line "
                f"({big['lines']:,} lines, careful parser)",
                f"{big['seconds']:.1f} s, peak RSS {_gib(big['peak_rss_bytes'])}",
                "<= 1.5 GiB",
                big["peak_rss_bytes"] <= 1.5 * 2**30,
            )
        )
    lat = figures.get("latency")
    if lat:
        measured = lat.get("seconds") is not None
        lines.append(
            _row(
                "latency: file landed -> rows in silver (daemon running)",
                f"{lat['seconds']:.1f} s" if measured else f"not measured: {lat.get('reason')}",
                "<= 20 s",
                measured and lat["seconds"] <= 20,
            )
        )
        if lat.get("gold_seconds") is not None:
            lines.append(
                _row(
                    "latency: file landed -> all of gold (daemon running)",
                    f"{lat['gold_seconds']:.1f} s",
                    "<= 45 s",
                    lat["gold_seconds"] <= 45,
                )
            )
    gold = figures.get("gold")
    if gold:
        first, last = gold["histories"][0], gold["histories"][-1]  # 1 and 365 (30: --quick)
        one, year = gold["days"][str(first)], gold["days"][str(last)]
        lines.append(
            _row(
                f"gold: one day's change through Dagster, {first} vs {last} days held (one run; "
                "the median of the days timed)",
                f"{one['seconds']:.1f} s (dbt {one['dbt_seconds']:.1f} s; deciding the run "
                f"{one.get('plan_seconds', 0):.1f} s before it; runs {_samples(one)}) vs "
                f"{year['seconds']:.1f} s (runs {_samples(year)}); ratio {gold['ratio']:.2f}",
                "<= 5 s; <= 1.3",
                one["seconds"] <= 5 and gold["ratio"] <= 1.3,
            )
        )
    stream = figures.get("stream")
    if stream:
        lines.append(
            _row(
                f"stream: {stream['messages']:,} NATS messages -> silver "
                f"(load {' '.join(stream.get('loadavg', []))})",
                f"{stream['messages_per_second']:,.0f} msg/s into silver of "
                f"{stream.get('published_per_second') or 0:,.0f}/s published "
                f"({stream['in_silver']:,} of {stream['messages']:,}); the service publishes "
                f"{stream.get('service_rows_per_second') or 0:,.0f} rows/s; latency p50 "
                f"{stream['latency_p50_seconds']:.1f} s, p95 {stream['latency_p95_seconds']:.1f} s",
                ">= 5,000 msg/s (within 2% of the offered 5,000/s, every message); p95 <= 5 s",
                bool(stream["throughput_target_met"] and stream["p95_target_met"]),
            )
        )
    for key, error in figures.items():
        if key.endswith("_error"):
            lines.append(
                _row(f"{key.removesuffix('_error')} scenario", f"failed: {error}", "", False)
            )
    sf10 = figures.get("sf10")
    if sf10:
        lines += _throughput_rows(
            sf10["figures"]["throughput"], f"[{sf10['meta']['started_at'][:10]}] "
        )
    return "\n".join(lines) + "\n"


def plot(path: Path, figures: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    t = figures.get("throughput")
    if t:
        names = ["floor", "bronze", "silver", "bronze+silver"]
        rates = [
            t["floor"]["rows_per_s"],
            t["bronze"]["rows_per_s"],
            t["silver"]["rows_per_s"],
            t["bronze_silver"]["rows_per_s"],
        ]
        bars = ax1.bar(
            names, [r / 1e6 for r in rates], color=["grey", "#b87333", "#8a9ba8", "#5b7083"]
        )
        for bar, rate in zip(bars, rates, strict=True):
            ax1.annotate(
                f"{rate / t['floor']['rows_per_s']:.2f}x",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
            )
        ax1.set_ylabel("M rows/s")
        ax1.set_title(
            f"Throughput, TPC-H lineitem SF{t['scale_factor']} ({t['rows'] / 1e6:.1f}M rows)"
        )
    inc = figures.get("incremental")
    if inc:
        hs = inc["histories"]
        for layer, src in (("bronze", "lineitem"), ("silver", "lineitem"), ("gold", "jaffle")):
            ys = [inc[src][h][f"{layer}_seconds"] for h in hs]
            ax2.plot(hs, ys, marker="o", label=f"{layer} ({src})")
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.set_xlabel("days already held")
        ax2.set_ylabel("seconds to load one new day")
        ax2.set_title("Incremental scaling")
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(stem: Path, meta: dict, figures: dict) -> None:
    """Write `<stem>.json`, `<stem>.md` and `<stem>.png`."""
    stem.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "figures": figures}, indent=2, default=str)
    )
    # Round-trip through JSON so tables read the same keys as a loaded results file.
    loaded = json.loads(stem.with_suffix(".json").read_text())
    figures = loaded["figures"]
    for src in ("lineitem", "jaffle"):
        if "incremental" in figures:
            figures["incremental"][src] = {
                int(k): v for k, v in figures["incremental"][src].items()
            }
    stem.with_suffix(".md").write_text(table(meta, figures))
    plot(stem.with_suffix(".png"), figures)
