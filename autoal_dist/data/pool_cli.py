"""`autoal-dist pool write|info|verify|seal`: the stored-pool commands, for cli.py to mount.

    sub = parser.add_subparsers(...)
    add_pool_parser(sub)              # registers `pool` with its four subcommands:
    # pool write --dataset SPEC --to DIR_OR_URI [--rows-per-file N] | info LOC | verify LOC
    # | seal LOC
    COMMANDS["pool"] = cmd_pool       # returns an exit status; raises DataError to report
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from autoal_dist.data.base import DataError
from autoal_dist.data.pool_format import ENCODINGS, PoolMeta


def add_pool_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `pool` (with `write`, `info`, `verify`, `seal`) to an argparse subparsers object."""
    pool = sub.add_parser("pool", help="write a dataset as a stored pool (parquet files on a "
                          "disk, shared mount or object store), inspect or verify one")
    ops = pool.add_subparsers(dest="pool_command", required=True)
    w = ops.add_parser("write", help="write --dataset SPEC to a new stored pool; runs then "
                       "use --dataset pool:DIR_OR_URI and read it by row")
    w.add_argument("--dataset", dest="dataset_spec", metavar="SPEC",
                   help="dataset spec, as for run --dataset (e.g. tinyimagenet, "
                   "npz:/data/pathmnist.npz)")
    w.add_argument("dataset", nargs="?", help=argparse.SUPPRESS)  # older positional form
    w.add_argument("--to", required=True, help="new (or empty) directory or URI "
                   "(s3://bucket/pools/NAME, gs://...)")
    w.add_argument("--data-root", dest="data_root", help="as for run --data-root")
    w.add_argument("--encoding", choices=ENCODINGS, default="raw",
                   help="images as raw uint8 bytes (default; fastest to read) or PNG "
                   "(lossless; smaller for natural images, decoded on read)")
    w.add_argument("--rows-per-file", dest="rows_per_file", type=int,
                   help="rows per parquet file (default: 64 row groups)")
    w.add_argument("--rows-per-group", dest="rows_per_group", type=int,
                   help="rows per row group, the unit a reader fetches (default: ~4 MiB)")
    i = ops.add_parser("info", help="print a stored pool's metadata (reads pool.json only)")
    i.add_argument("location", help="the pool's directory or URI")
    v = ops.add_parser("verify", help="read all of a stored pool and check it against its "
                       "pool.json (pool.json's own digest, files, ids, labels, samples, "
                       "fingerprint, normalizer statistics)")
    v.add_argument("location", help="the pool's directory or URI")
    s = ops.add_parser("seal", help="record pool.json's header digest after an intended edit "
                       "(or for a pool an older version wrote): reads all of the pool and "
                       "checks it against pool.json as it now reads first, as verify does")
    s.add_argument("location", help="the pool's directory or URI")
    return pool


def describe(meta: PoolMeta, location: str) -> str:
    shape = "x".join(map(str, meta.sample_shape))
    files = {s: len(f) for s, f in meta.splits.items()}
    return (f"{location}: {meta.rows('train')} train + {meta.rows('test')} test samples "
            f"{shape} {meta.dtype} ({meta.encoding}), {meta.num_classes} classes, "
            f"{files['train']} + {files['test']} files, from {meta.name}, "
            f"fingerprint {meta.fingerprint}")


def dataset_spec(args: argparse.Namespace) -> str:
    """`pool write`'s dataset: --dataset SPEC (or the older positional SPEC, not both)."""
    flag, positional = getattr(args, "dataset_spec", None), getattr(args, "dataset", None)
    if flag and positional and flag != positional:
        raise DataError(f"pool write: --dataset {flag!r} and the positional {positional!r} "
                        "differ; give --dataset only")
    if not (flag or positional):
        raise DataError("pool write: --dataset SPEC is required (e.g. --dataset tinyimagenet)")
    return str(flag or positional)


def cmd_pool(args: argparse.Namespace) -> int:
    from autoal_dist.data.base import load_dataset
    from autoal_dist.data.pool_format import normalize_location
    from autoal_dist.data.pool_read import read_meta, verify_pool
    from autoal_dist.data.pool_write import seal_pool, write_pool

    if args.pool_command == "write":
        for flag, value in (("--rows-per-file", args.rows_per_file),
                            ("--rows-per-group", args.rows_per_group)):
            if value is not None and value < 1:
                raise DataError(f"pool write: {flag} {value}: must be a number of rows >= 1 "
                                "(or left out: the default)")
        spec = dataset_spec(args)
        # lazy: a folder of image files is decoded a row group at a time as it is written
        data = load_dataset(spec, args.data_root, lazy=True)
        meta = write_pool(data, args.to, args.rows_per_file, args.encoding,
                          rows_per_group=args.rows_per_group,
                          progress=lambda line: print(line, file=sys.stderr, flush=True))
        print(describe(meta, normalize_location(args.to)))
        print(f"use it with: --dataset pool:{args.to}")
    elif args.pool_command == "info":
        print(describe(read_meta(args.location), normalize_location(args.location)))
    elif args.pool_command == "seal":
        meta = seal_pool(args.location)
        print(f"sealed: {describe(meta, normalize_location(args.location))}; pool.json's header "
              f"digest {meta.header_digest} recorded")
    else:
        meta = verify_pool(args.location)
        print("ok: " + describe(meta, normalize_location(args.location)))
        if not meta.header_digest:
            print("note: pool.json has no header digest (written by an older version): an edit "
                  "to its header fields (class count, sample layout, ...) is not detected; "
                  f"`autoal-dist pool seal {args.location}` records one")
    return 0
