"""The `lakehouse` command: seed demo data, materialize through Dagster, summarise the tables.

lakehouse seed [--days N] [--start DATE]     deliver the Jaffle Shop days not yet landed
lakehouse seed --redeliver DATE | --late DATE  a corrected day, or late orders of earlier days
lakehouse materialize                        bronze + silver for every landed date, then gold
lakehouse replay-quarantine SOURCE           re-validate quarantined rows, promote those that pass
lakehouse summary                            rows per layer and table
lakehouse maintain [SOURCE] [--dry-run]      expire data past its retention, compact, vacuum
lakehouse catalog --deprecated               deprecated tables and what still reads them
lakehouse serve [--postgres DSN] [--role R]  rebuild the per-role DuckDB files (and PostgreSQL) from gold
lakehouse erase --subject customers:<id>     erase a data subject from every layer, for good
lakehouse contract draft SOURCE              draft a contract from the files landed for SOURCE
lakehouse metrics list | query M1,M2 [--by store] [--grain week]   metrics without SQL
lakehouse extract SOURCE                     land new rows of a database source as a Parquet file
lakehouse stream SOURCE [--every S]          serve SOURCE: micro-batches to silver, reported to Dagster
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from lakehouse.core import delta, system
from lakehouse.core.contract import Contract, load_contracts
from lakehouse.core.errors import LakehouseError
from lakehouse.core.lake import Lake

log = logging.getLogger("lakehouse")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lakehouse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root",
        help="data root: a directory or s3://bucket/prefix (default: $LAKEHOUSE_ROOT, else ./data)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    seed_p = sub.add_parser("seed", help="generate Jaffle Shop data into the landing zone")
    what = seed_p.add_mutually_exclusive_group()
    what.add_argument(
        "--days",
        type=int,
        help="deliver days 1..N of the feed, skipping days already landed (default 21)",
    )
    what.add_argument(
        "--redeliver",
        metavar="DATE",
        help="replace a delivered day's orders and items files with a corrected version",
    )
    what.add_argument(
        "--late",
        metavar="DATE",
        help="deliver late orders (of earlier delivered days) into landing date DATE",
    )
    seed_p.add_argument(
        "--fresh",
        action="store_true",
        help="start over: delete the local root's landing zone, lake and warehouse",
    )
    seed_p.add_argument(
        "--start",
        metavar="DATE",
        type=_date_arg,
        help="day 1 of the feed on an empty landing zone (default: --days days before today, "
        "so the feed ends yesterday)",
    )
    seed_p.add_argument(
        "--defects",
        type=float,
        default=0.0,
        metavar="RATE",
        help="share of event rows (orders, items, tweets) to spoil with realistic defects, "
        "e.g. 0.01 (default 0)",
    )
    mat_p = sub.add_parser(
        "materialize",
        help="bronze + silver for every landed date, then the gold that silver's changes call for",
    )
    mat_p.add_argument(
        "--reprocess",
        action="append",
        default=[],
        metavar="SOURCE",
        help="load SOURCE again even where nothing changed (repeatable; `all` for every source)",
    )
    replay_p = sub.add_parser(
        "replay-quarantine",
        help="after a contract fix: re-validate a source's quarantined rows, promote those that pass",
    )
    replay_p.add_argument("source", help="the source (contract name)")
    sub.add_parser("summary", help="print rows per layer and table")
    maintain_p = sub.add_parser(
        "maintain",
        help="expire partitions past their retention, compact, checkpoint and vacuum every table",
    )
    maintain_p.add_argument("source", nargs="?", help="only this source's tables (default: all)")
    maintain_p.add_argument(
        "--dry-run", action="store_true", help="print what expires and change nothing"
    )
    catalog_p = sub.add_parser("catalog", help="list tables (--deprecated: and what reads them)")
    catalog_p.add_argument(
        "--deprecated",
        action="store_true",
        required=True,
        help="each deprecated table, its replacement and sunset, and what still reads it",
    )
    serve_p = sub.add_parser(
        "serve", help="serve gold per role (lakehouse/policies.yaml): DuckDB files, PostgreSQL"
    )
    serve_p.add_argument(
        "--postgres",
        metavar="DSN",
        help="also load PostgreSQL with roles, grants, RLS and masking views "
        "(default: $LAKEHOUSE_SERVE_POSTGRES)",
    )
    serve_p.add_argument(
        "--role", action="append", help="rebuild only this role's file (repeatable)"
    )
    erase_p = sub.add_parser(
        "erase",
        help="erase a data subject's rows from every layer and make them unrecoverable",
        description="Exit status: 0 erased, 1 no such subject (nothing changed), 2 refused "
        "(bad request, runs in progress), 3 stopped midway (run it again to finish).",
    )
    erase_p.add_argument(
        "--subject", required=True, metavar="SUBJECT:ID", help="e.g. customers:<customer id>"
    )
    extract_p = sub.add_parser(
        "extract", help="land SOURCE's new rows (a contract with a `source:` block) as Parquet"
    )
    extract_p.add_argument("source", help="the source (contract name)")
    extract_p.add_argument(
        "--landing-date",
        metavar="DATE",
        help="the landing folder to extract into (default: today, UTC)",
    )
    extract_p.add_argument(
        "--drop-slot",
        action="store_true",
        help="mode: cdc only: drop the source's replication slot and publication, extract nothing",
    )
    stream_p = sub.add_parser(
        "stream",
        help="run as a service: land SOURCE's micro-batches into bronze and silver until stopped",
    )
    stream_p.add_argument("source", help="the source (contract name)")
    stream_p.add_argument(
        "--every", type=float, default=1.0, metavar="S", help="seconds between drains (default 1)"
    )
    stream_p.add_argument("--max-runs", type=int, metavar="N", help="stop after N micro-batches")
    contract_p = sub.add_parser("contract", help="work with source contracts")
    contract_sub = contract_p.add_subparsers(dest="contract_command", required=True)
    draft_p = contract_sub.add_parser(
        "draft", help="infer a contract from the files landed for SOURCE (written, not overwritten)"
    )
    draft_p.add_argument("source", help="the source: files under <root>/landing/SOURCE/<date>/")
    draft_p.add_argument(
        "--primary-key", metavar="COLS", help="comma-separated key columns (default: inferred)"
    )
    draft_p.add_argument(
        "--out", metavar="DIR", help="write DIR/SOURCE.yaml (default: the contracts directory)"
    )
    metrics_p = sub.add_parser("metrics", help="list the metrics, or query them without SQL")
    metrics_sub = metrics_p.add_subparsers(dest="metrics_command", required=True)
    metrics_sub.add_parser("list", help="every metric: description, owner, dimensions")
    query_p = metrics_sub.add_parser(
        "query", help="metrics per day, week or month, optionally by a dimension"
    )
    query_p.add_argument("metrics", help="comma-separated metric names, e.g. revenue,order_count")
    query_p.add_argument(
        "--by", default="", help="comma-separated dimensions: store, product_type, customer_cohort"
    )
    query_p.add_argument("--grain", default="day", help="day, week or month (default day)")
    query_p.add_argument("--since", metavar="DATE", help="first day (YYYY-MM-DD)")
    query_p.add_argument("--until", metavar="DATE", help="last day (YYYY-MM-DD)")
    query_p.add_argument(
        "--format", default="table", choices=["table", "csv", "json"], help="output (default table)"
    )
    args = parser.parse_args(argv)
    if (
        args.command == "seed"
        and (args.redeliver or args.late)
        and (args.fresh or args.defects or args.start)
    ):
        parser.error(
            "--redeliver and --late change delivered days: no --fresh, --defects or --start"
        )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    if args.root and os.environ.get("LAKEHOUSE_ROOT") != args.root:
        # the definitions (sensors, resources) read the root from the environment; set once
        # here, before any work starts threads (a `setenv` beside a thread's `getenv` crashes)
        os.environ["LAKEHOUSE_ROOT"] = args.root
    try:
        lake = Lake.from_env()
        if args.command == "seed":
            if args.redeliver:
                return _redeliver(lake, args.redeliver)
            if args.late:
                return _late(lake, args.late)
            days = 21 if args.days is None else args.days
            return _seed(lake, days, args.fresh, args.defects, args.start)
        if args.command == "materialize":
            return _materialize(lake, args.reprocess)
        if args.command == "replay-quarantine":
            return _replay(lake, args.source)
        if args.command == "extract":
            return _extract(lake, args.source, args.landing_date, drop_slot=args.drop_slot)
        if args.command == "stream":
            return _stream(lake, args.source, args.every, args.max_runs)
        if args.command == "contract":
            return _draft(lake, args.source, args.primary_key, args.out)
        if args.command == "metrics":
            return _metrics(lake, args)
        if args.command == "serve":
            return _serve(lake, args.postgres, args.role)
        if args.command == "maintain":
            return _maintain(lake, args.source, dry_run=args.dry_run)
        if args.command == "catalog":
            return _catalog_deprecated()
        if args.command == "erase":
            return _erase(lake, args.subject)
        print(summary_table(lake))
        return 0
    except LakehouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _serve(lake: Lake, dsn: str | None, roles: Sequence[str] | None) -> int:
    from lakehouse.core.policies import load_policy
    from lakehouse.core.serve import POSTGRES_ENV, serve

    served = serve(
        lake,
        load_policy(),
        load_contracts(),
        postgres_dsn=dsn or os.environ.get(POSTGRES_ENV) or None,
        roles=roles,
    )
    for store in served.stores:
        state = (
            "NOT published (clear PII found)"
            if not store.published
            else "written"
            if store.written
            else "unchanged"
        )
        tables = ", ".join(f"{t} {n}" for t, n in store.tables.items())
        print(f"{store.role:<12} {store.path}: {state}; {tables}")
    if served.postgres is not None:
        for f in served.postgres.loads:
            print(f"postgres     {f.table}: {f.rows} rows in {f.seconds:.2f}s")
        print(f"postgres     roles {', '.join(served.postgres.roles)}: grants, RLS, views")
    for finding in served.findings:
        print(f"PII gate: {finding}", file=sys.stderr)
    for origin, columns in served.sample.published_in_clear.items():
        print(
            f"note: values of PII column {origin} are published in clear by "
            f"{', '.join(columns)}: classify that column"
        )
    return 1 if served.findings else 0


def _date_arg(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a date (YYYY-MM-DD)") from None


def _seed(lake: Lake, days: int, fresh: bool, defects: float, start: date | None) -> int:
    from lakehouse.core.seed import clear_local_root, seed

    if fresh:
        clear_local_root(lake)
    result = seed(lake, days=days, defects=defects, start=start)
    feed = f"days 1..{days} of the feed ({result.first_day} .. {result.last_day})"
    kept = f"; {result.skipped} files already landed left untouched" if result.skipped else ""
    if not result.delivered:
        print(f"Nothing new: {feed} are already in {lake.landing_root}{kept}")
        return 0
    print(
        f"Delivered {sum(result.files.values())} files, {sum(result.rows.values())} rows, "
        f"landing dates {result.delivered[0]} .. {result.delivered[-1]} "
        f"({len(result.delivered)} days), into {lake.landing_root}: {feed}{kept}"
    )
    return 0


def _redeliver(lake: Lake, day: str) -> int:
    from lakehouse.core.seed import redeliver

    result = redeliver(lake, day)
    files = " and ".join(result.files)
    if result.already:
        print(f"Already redelivered: {files} hold the correction for {result.landing_date}")
        return 0
    print(
        f"Redelivered {files}: {result.orders} orders ({len(result.changed)} corrected, "
        f"{len(result.removed)} withdrawn, {len(result.added)} added, 1 moved to "
        f"{result.moved_to}), {result.items} items, landing date {result.landing_date}"
    )
    return 0


def _late(lake: Lake, day: str) -> int:
    from lakehouse.core.seed import deliver_late

    result = deliver_late(lake, day)
    print(
        f"Delivered {' and '.join(result.files)}: {result.orders} late orders, {result.items} "
        f"items, event dates {', '.join(str(d) for d in result.event_dates)}, "
        f"landing date {result.landing_date}"
    )
    return 0


def _replay(lake: Lake, source: str) -> int:
    from lakehouse.core.replay import replay_quarantine

    contracts = {c.name: c for c in load_contracts()}
    if source not in contracts:
        print(f"error: no contract for source `{source}`", file=sys.stderr)
        return 2
    result = replay_quarantine(lake, contracts[source], run_id=f"replay-{uuid.uuid4()}")
    print(
        f"{source}: {result.checked} quarantined rows re-validated, {result.promoted} promoted "
        f"to silver, {result.still_failing} still failing"
        + (
            f", {result.skipped_blocked} on blocked landing dates (materialize those again)"
            if result.skipped_blocked
            else ""
        )
    )
    return 0


def _extract(lake: Lake, source: str, landing_date: str | None, *, drop_slot: bool) -> int:
    from lakehouse.core.extract import extract

    contract = _contract(source)
    if drop_slot:
        from lakehouse.core.extract.cdc import drop_slot as drop

        if contract.source is None or contract.source.mode != "cdc":
            raise LakehouseError(f"source `{source}` is not a `mode: cdc` source: no slot")
        dropped = drop(contract)
        print(f"{source}: replication slot {'dropped' if dropped else 'was not there'}")
        return 0
    result = extract(lake, contract, landing_date=landing_date)
    print(f"Extracted {result.summary}")
    return 0


def _stream(lake: Lake, source: str, every: float, max_runs: int | None) -> int:
    """Serve SOURCE: micro-batches landed, loaded into bronze and silver, reported to Dagster."""
    from lakehouse.core.extract.service import serve

    contract = _contract(source)
    reporters = []
    if os.environ.get("DAGSTER_HOME"):
        import dagster as dg

        from lakehouse.defs.extract import stream_reporter

        reporters.append(stream_reporter(dg.DagsterInstance.get(), contract))

    def report(batch) -> None:
        print(batch.summary, flush=True)
        for each in reporters:
            each(batch)

    runs = 0
    try:
        runs = serve(lake, contract, every=every, max_batches=max_runs, report=report)
    except KeyboardInterrupt:
        print(f"{source}: stopped")
    else:
        print(f"{source}: stopped after {runs} micro-batch(es)")
    return 0


def _draft(lake: Lake, source: str, primary_key: str | None, out: str | None) -> int:
    from lakehouse.core.contract import CONTRACTS_DIR
    from lakehouse.core.draft import write_draft

    directory = out or os.environ.get("LAKEHOUSE_CONTRACTS") or CONTRACTS_DIR
    keys = [k.strip() for k in primary_key.split(",") if k.strip()] if primary_key else None
    path, draft = write_draft(lake, source, directory, primary_key=keys)
    print(f"Drafted {path}\n{draft.summary}; review the TODOs before materializing")
    return 0


def _metrics(lake: Lake, args: argparse.Namespace) -> int:
    from lakehouse.core.metrics import parse_date, render, semantic_layer

    layer = semantic_layer(lake.warehouse_path)
    if args.metrics_command == "list":
        for m in layer.metrics():
            print(f"{m.name} ({m.type}, owner {m.owner or '-'}): {m.description}")
            print(f"    dimensions: {', '.join(m.dimensions) or '-'}; grains: day, week, month")
        return 0
    names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    by = [d.strip() for d in args.by.split(",") if d.strip()]
    since = parse_date(args.since, "--since")
    until = parse_date(args.until, "--until")
    result = layer.query(names, by=by, grain=args.grain, since=since, until=until)
    print(render(result.frame, args.format))
    log.info("metrics: %d row(s) in %.2fs", result.frame.height, result.seconds)
    return 0


def _erase(lake: Lake, request: str) -> int:
    """Erase one subject; refused while a Dagster run may be writing (zero-retention vacuum)."""
    from lakehouse.core.erasure import erase

    subject, sep, identifier = request.partition(":")
    if not sep or not subject or not identifier:
        print(f"error: --subject `{request}` is not SUBJECT:ID", file=sys.stderr)
        return 2
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the instance's storage set-up
    if os.environ.get("DAGSTER_HOME"):
        import dagster as dg

        from lakehouse.defs.recovery import UNFINISHED, recover_dead_runs

        instance = dg.DagsterInstance.get()
        recover_dead_runs(instance)
        statuses = [*UNFINISHED, dg.DagsterRunStatus.QUEUED]
        running = instance.get_run_ids(dg.RunsFilter(statuses=statuses))
        if running:
            print(
                f"error: {len(running)} Dagster run(s) in progress ({', '.join(running[:3])}): "
                "an erasure vacuums at zero retention and needs every writer stopped; "
                "wait for them (and pause the sensors) and run it again",
                file=sys.stderr,
            )
            return 2
    try:
        done = erase(lake, subject, identifier, writers_held=True)
    except LakehouseError:
        raise
    except Exception as exc:
        log.exception("erasure of %s stopped", subject)
        print(
            f"error: the erasure stopped midway ({type(exc).__name__}: {exc}); the subject may "
            "be erased from some tables only: run the same `lakehouse erase` again to finish it",
            file=sys.stderr,
        )
        return 3
    for table in done.resumed:
        print(f"finished the interrupted erasure {done.request_id} of {table}")
    for table, request in sorted(done.purged_for_others.items()):
        print(f"finished the purge of {table} that the interrupted erasure {request} left")
    for path in done.landing_files:
        print(f"landing file still holding the subject (the source's owners must erase it): {path}")
    if not done.found:
        if done.purged_for_others:
            return 0
        print(f"{subject}: no such subject in the lake (never loaded, or erased); nothing changed")
        return 1
    for table, rows in sorted(done.rows.items()):
        print(f"erased {rows} row(s) from {table}")
    for path in done.served_removed:
        print(f"removed role store {path}")
    from lakehouse.core.serve import serving_enabled

    if serving_enabled(lake):  # the role files and PostgreSQL served gold with the subject
        print("serving again from gold without the subject (role files, PostgreSQL if configured)")
        if _serve(lake, None, None) != 0:
            print("error: serving failed; run `lakehouse serve` again", file=sys.stderr)
            return 2
    print(
        f"erasure {done.request_id}: {done.total} row(s) in {len(done.rows)} table(s), "
        "old versions vacuumed and their log expired; gold aggregates follow at the next "
        "`lakehouse materialize`"
    )
    return 0


def _materialize(lake: Lake, reprocess: Sequence[str] = ()) -> int:
    from lakehouse.definitions import defs
    from lakehouse.defs.runs import landed_dates, materialize_landed

    dates = landed_dates(lake)
    if not dates:
        print(f"Nothing has landed under {lake.landing_root}; run `lakehouse seed` first.")
        return 1
    known = {c.name for c in load_contracts()}
    unknown = [s for s in reprocess if s != "all" and s not in known]
    if unknown:
        print(f"error: no contract for source(s) `{'`, `'.join(unknown)}`", file=sys.stderr)
        return 2
    sources = ["*"] if "all" in reprocess else list(reprocess)
    instance = _instance()
    log.info(
        "materialize: bronze + silver for landing dates %s .. %s as one run, then gold",
        dates[0],
        dates[-1],
    )
    started = time.monotonic()
    results = materialize_landed(defs, lake, instance=instance, dates=dates, reprocess=sources)
    from lakehouse.defs.serve import serve_after_gold

    results += serve_after_gold(defs, lake, results, instance=instance)
    elapsed = time.monotonic() - started
    print(summary_table(lake))
    print(checks_table(results))
    held = held_table(lake)
    if held:
        print(held)
    ok = all(r.success for r in results)
    if not results:
        verdict = "nothing to do"
    elif ok and not held:
        verdict = "all runs succeeded"
    elif ok:
        verdict = "published what it could; some landing dates are HELD (above)"
    else:
        verdict = "SOME STEPS FAILED"
    print(f"\nMaterialized in {elapsed:.1f}s: {verdict}")
    return 0 if ok and not held else 1


def _maintain(lake: Lake, source: str | None, *, dry_run: bool) -> int:
    """Run the maintenance jobs (or, dry, list what they would expire) with progress output."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the instance's storage set-up
    from lakehouse.core import maintenance
    from lakehouse.defs.maintenance import SHARED_JOB, SOURCE_LAYERS, job_name

    contracts = [_contract(source)] if source else load_contracts()
    started = time.monotonic()
    if dry_run:
        today = date.today()
        for contract in contracts:
            for layer in SOURCE_LAYERS:
                report = maintenance.maintain_table(
                    lake,
                    layer,
                    contract.name,
                    keep=contract.retention.of(layer),
                    history_hours=contract.retention.history_hours,
                    today=today,
                    dry_run=True,
                    progress=print,
                )
                print(
                    f"{report.table}: {sum(report.expired.values())} row(s) in "
                    f"{len(report.expired)} partition(s) expired; {report.files_before} data "
                    f"file(s), {report.live_before} live" + "".join(f"; {n}" for n in report.notes)
                )
        return 0
    from lakehouse.definitions import build_definitions
    from lakehouse.defs.runs import QUIET

    instance = _instance()
    jobs = [job_name(c.name) for c in contracts] + ([] if source else [SHARED_JOB])
    defs = build_definitions()
    failed = []
    for i, name in enumerate(jobs, 1):
        log.info("maintain: job %d/%d `%s`", i, len(jobs), name)
        result = defs.resolve_job_def(name).execute_in_process(
            instance=instance, run_config=QUIET, raise_on_error=False
        )
        if not result.success:
            failed.append(name)
    log.info("maintain: %d job(s) in %.1fs", len(jobs), time.monotonic() - started)
    if failed:
        print(
            f"error: maintenance failed in {', '.join(failed)} (see the run logs)", file=sys.stderr
        )
        return 1
    return 0


def _instance():
    """The Dagster instance (`DAGSTER_HOME`'s, else an ephemeral one), its dead runs recovered."""
    import dagster as dg

    from lakehouse.defs.recovery import recover_dead_runs

    instance = (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )
    for dead in recover_dead_runs(instance):
        print(dead.message, flush=True)
    return instance


def _catalog_deprecated() -> int:
    """`lakehouse catalog --deprecated`: deprecated tables and everything still reading them."""
    from lakehouse.definitions import build_definitions
    from lakehouse.defs.deprecation import deprecated_in

    tables = deprecated_in(build_definitions())
    if not tables:
        print("no deprecated table")
        return 0
    for table in tables:
        print(f"{table.table}: {table.deprecation.banner}")
        for reader in table.readers or ("(nothing reads it any more)",):
            print(f"    read by {reader}")
    return 0


def held_table(lake: Lake) -> str:
    """Landing dates whose rows are held back, and why; empty when none are."""
    from lakehouse.core import system

    held = system.held_partitions(lake)
    if held.is_empty():
        return ""
    lines = ["", "held back (their rows wait in bronze; fix and materialize again):"]
    for source, day, status, rows, detail in held.select(
        "source", "landing_date", "status", "held", "detail"
    ).iter_rows():
        lines.append(f"  {source} {day}: {status}, {rows} row(s): {detail}")
    return "\n".join(lines)


def table_rows(lake: Lake, layer: str, table: str) -> int | None:
    stats = delta.table_stats(lake, lake.table_uri(layer, table))  # type: ignore[arg-type]
    return None if stats is None else stats[0]


def landed_rows(lake: Lake, source: Contract | str) -> int:
    """Data rows in the landed files, as bronze's reader counts them (rejected files: 0).

    A file whose latest ingest-ledger row is for its current bytes (same size and version)
    counts that row's `rows`, what bronze read; any other file is read with bronze's reader
    (`.gz`, blank lines, bad lines and junk counted as bronze would count them)."""
    from lakehouse.core.bronze import landed_row_counts

    contract = source if isinstance(source, Contract) else _contract(source)
    return sum(landed_row_counts(lake, contract).values())


def _contract(name: str) -> Contract:
    for contract in load_contracts():
        if contract.name == name:
            return contract
    raise LakehouseError(f"no contract for source `{name}`")


def summary_table(lake: Lake) -> str:
    """Rows per source and layer, and rows per gold mart."""
    lines = [
        f"{'source':<12}{'landed':>10}{'bronze':>10}{'silver':>10}{'quarantine':>12}",
        "-" * 54,
    ]
    for c in load_contracts():
        cells = [
            landed_rows(lake, c),
            table_rows(lake, "bronze", c.name),
            table_rows(lake, "silver", c.name),
            table_rows(lake, "quarantine", c.name) or 0,
        ]
        lines.append(
            f"{c.name:<12}"
            + "".join(f"{'-' if v is None else v:>10}" for v in cells[:3])
            + f"{cells[3]:>12}"
        )
    gold_dir = Path(lake.root) / "lake" / "gold"
    if not lake.is_s3 and gold_dir.is_dir():
        lines += ["", f"{'gold mart':<30}{'rows':>10}", "-" * 40]
        marts = sorted(p.name for p in gold_dir.iterdir() if p.name != "metrics")
        if (gold_dir / "metrics").is_dir():  # the headline metrics, one table each
            marts += sorted(f"metrics/{p.name}" for p in (gold_dir / "metrics").iterdir())
        for mart in marts:
            lines.append(f"{mart:<30}{table_rows(lake, 'gold', mart) or 0:>10}")
    return "\n".join(lines + rejected_lines(lake))


def rejected_lines(lake: Lake) -> list[str]:
    """The landed files bronze cannot read now (their latest outcome is a rejection)."""
    from lakehouse.core.landing import list_landing_files

    rows = []
    for c in load_contracts():
        dates = sorted({f.landing_date for f in list_landing_files(lake, c.name)})
        for files in system.rejected_now(lake, c.name, dates).values():
            rows += [f"  {f['path']}: {f['reason']}" for f in files]
    if not rows:
        return []
    return ["", "rejected files (nothing of them is in bronze; see _system/rejected_files):", *rows]


def checks_table(results: Sequence[object]) -> str:
    """Passed and failed asset checks of the given runs, per asset."""
    counts: dict[str, list[int]] = {}
    failed: list[str] = []
    for result in results:
        for evaluation in result.get_asset_check_evaluations():  # type: ignore[attr-defined]
            key = "/".join(evaluation.asset_key.path)
            counts.setdefault(key, [0, 0])[0 if evaluation.passed else 1] += 1
            if not evaluation.passed:
                failed.append(f"{key}:{evaluation.check_name}")
    lines = ["", f"{'asset':<24}{'checks passed':>15}{'failed':>8}", "-" * 47]
    lines += [f"{k:<24}{p:>15}{f:>8}" for k, (p, f) in sorted(counts.items())]
    if failed:
        lines.append("failed checks: " + ", ".join(failed))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
