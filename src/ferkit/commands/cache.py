"""ferkit cache [--info | --clear]: what the decode cache holds, and emptying it."""

from __future__ import annotations

import json
import time


def add_parser(sub):
    p = sub.add_parser(
        "cache", help="show or clear the decode cache",
        description="Training and evaluation decode each dataset split once into "
        "$FERKIT_CACHE (default ~/.cache/ferkit). Entries of edited or moved data are never "
        "read again but stay on disk: list them, or delete them all (the next run decodes again).",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--info", action="store_true", help="list the entries (the default)")
    g.add_argument("--clear", action="store_true", help="delete every entry")
    p.add_argument("--json", action="store_true", help="--info as JSON")
    p.set_defaults(func=run)


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def run(args) -> int:
    from ferkit.data.cache import cache_dir, cache_entries, clear_cache

    if args.clear:
        n, freed = clear_cache()
        print(f"{cache_dir()}: deleted {n} file(s), {_mb(freed)} freed")
        return 0
    entries = cache_entries()
    if args.json:
        print(json.dumps({"dir": str(cache_dir()), "entries": entries}, indent=2))
        return 0
    total = sum(e["bytes"] for e in entries)
    print(f"{cache_dir()}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {_mb(total)}")
    for e in entries:
        shape = e["shape"]
        faces = f"{e['items']} x {shape[1]}x{shape[2]}x{shape[3]}" if shape else f"{e['items']} faces"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e["modified"]))
        what = e["problem"] or e["root"] or "?"
        print(f"  {e['key']}  {_mb(e['bytes']):>10}  {faces:<20} {when}  {what}")
    return 0
