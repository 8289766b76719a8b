"""`pc-report`: build the web report of an output tree, or read the telemetry back from Redis."""

import argparse
import logging
import sys

__all__ = ["main", "build_parser", "readback", "format_table"]

log = logging.getLogger("pc_gpu.report")

_COLUMNS = ("timestamp", "zp_adu_per_s", "sky_adu_per_s", "n_stars_for_zp", "mjd_obs", "flag")


def build_parser():
    """The pc-report parser."""
    p = argparse.ArgumentParser(
        prog="pc-report",
        description="Write static web pages of an output tree (of pc-proc --nightly_subdir, "
                    "pc-realtime or pc-archive) under OUT/report/: an index of the nights, a "
                    "page per night (zeropoint, sky, stars and conditions against time; a "
                    "table of the frames) and a page per frame. Only nights whose outputs "
                    "changed are rebuilt. With --redis, print the telemetry hash and the last "
                    "entries of its history stream instead.",
        epilog="Open OUT/report/index.html, or serve OUT (python -m http.server -d OUT) and open "
               "/report/. Redis: REDISURL or REDISHOST, REDISPORT, REDISDBNUM; REDISKEY, REDISPASSWORD.")
    p.add_argument("outdir", nargs="?", metavar="OUT", help="output tree")
    p.add_argument("--force", action="store_true", help="rebuild every page")
    p.add_argument("--redis", action="store_true",
                   help="print the latest telemetry hash and the last --count history entries")
    p.add_argument("--count", type=int, default=20, help="history entries with --redis (default 20)")
    p.add_argument("-v", "--verbose", action="store_true", help="more logging")
    p.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    return p


def readback(settings, count):
    """(hash, entries) from Redis: the telemetry hash and the last `count` stream entries,
    newest first, as [(entry id, {field: value})]."""
    from ..telemetry import connect

    client = connect(settings)
    decode = (lambda d: {k.decode(): v.decode() for k, v in d.items()})
    latest = decode(client.hgetall(settings.key))
    entries = [(i.decode(), decode(f)) for i, f in client.xrevrange(f"{settings.key}:history", count=count)]
    return latest, entries


def format_table(latest, entries, key):
    """Plain-text tables of the hash (field, value) and of the stream entries."""
    lines = [f"hash {key}:"]
    if latest:
        width = max(len(k) for k in latest)
        lines += [f"  {k:<{width}}  {latest[k]}" for k in sorted(latest)]
    else:
        lines.append("  (empty)")
    lines.append(f"stream {key}:history, last {len(entries)} entries (newest first):")
    columns = ("id", "frame") + _COLUMNS
    cells = [[i, f.get("frame", "")] + [f.get(c, "") for c in _COLUMNS] for i, f in entries]
    widths = [max([len(c)] + [len(row[j]) for row in cells]) for j, c in enumerate(columns)]
    lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines) + "\n"


def main(argv=None):
    """Entry point of `pc-report`; returns the exit status (1: bad input or Redis unreachable)."""
    from ..cli import configure_logging
    from ..errors import PCError

    args = build_parser().parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        if args.redis:
            import redis

            from ..telemetry import redis_settings

            settings = redis_settings()
            try:
                latest, entries = readback(settings, max(args.count, 0))
            except redis.RedisError as exc:
                log.error("cannot read telemetry from %s: %s", settings.description(), exc)
                return 1
            sys.stdout.write(format_table(latest, entries, settings.key))
            return 0
        if args.outdir is None:
            build_parser().error("OUT is required (or --redis)")
        from .build import build_report

        result = build_report(args.outdir, force=args.force)
        log.info("open %s/report/index.html", args.outdir.rstrip("/"))
        return 0 if result is not None else 1
    except PCError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
