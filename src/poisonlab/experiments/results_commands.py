"""``poisonlab results``: query the result store of a workdir (filter, group, export)."""

from __future__ import annotations

import argparse
from pathlib import Path

from poisonlab.errors import PoisonlabError


def add_results_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "results",
        help="query a result store: filter, group with intervals, export CSV or Parquet",
        description="Rows are flattened into columns kind, trial_key, seed, metrics.<name>, meta.<name> (and "
        "probe/defense for audit rows, point.<field> for sweep rows).",
    )
    p.add_argument("store", help="a results.sqlite file or a workdir holding one")
    p.add_argument("--kind", help="only rows of this kind (audit, train, backdoor, sweep-train, ...)")
    p.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE", help="filter (repeatable)")
    p.add_argument("--group-by", action="append", default=[], metavar="FIELD", help="group rows (repeatable)")
    p.add_argument("--columns", help="comma-separated columns to print (default: all)")
    p.add_argument("--csv", metavar="FILE", help="write CSV to FILE ('-' for standard output)")
    p.add_argument("--parquet", metavar="FILE", help="write Parquet to FILE (needs pyarrow)")


def run_results(args: argparse.Namespace) -> int:
    from poisonlab.experiments.results import query, to_csv, write_parquet
    from poisonlab.experiments.store import ResultStore
    from poisonlab.io.atomic import write_bytes_atomic

    path = Path(args.store)
    if path.is_dir():
        path = path / "results.sqlite"
    if not path.is_file():
        raise PoisonlabError(f"{path}: no result store here")
    columns, rows = query(ResultStore(path), args.kind, args.where, args.group_by)
    if args.columns:
        wanted = [c.strip() for c in args.columns.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in columns]
        if unknown:
            raise PoisonlabError(f"--columns: unknown {unknown}; available: {columns}")
        columns = wanted
    if args.parquet:
        write_parquet(columns, rows, args.parquet)
    if args.csv == "-":
        print(to_csv(columns, rows), end="")
    elif args.csv:
        write_bytes_atomic(Path(args.csv), to_csv(columns, rows).encode())
    if not args.csv or args.csv != "-":
        shown = [c for c in columns if not c.startswith("meta.")][:12]
        print(to_csv(shown, rows), end="")
        print(
            f"{len(rows)} rows"
            + ("" if len(shown) == len(columns) else f"; {len(columns)} columns, first {len(shown)} shown")
        )
    return 0
