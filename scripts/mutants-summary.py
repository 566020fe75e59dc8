#!/usr/bin/env python3
"""Summarise cargo-mutants shards: OUT/shard*/mutants.out/outcomes.json.

Usage: python3 scripts/mutants-summary.py OUT
       python3 scripts/mutants-summary.py --untested OUT/shardK

Prints per shard: mutants in the shard, tested, caught, missed, timeout,
unviable, and the kill rate over viable tested mutants (caught + timeout
over caught + timeout + missed), then the total and every missed or
timed-out mutant by name, for TESTING.md. A shard resumed by
`MUTANTS_RESUME=1 scripts/mutants-shard.sh` has the rest of its run in
OUT/shardK/rest/mutants.out; its outcomes for mutants of the shard's own
listing are added to the shard's row, any others (cargo-mutants runs
"delete field" mutants whatever the filter) are left out.

With --untested, prints one anchored regex (for `cargo mutants -F`) per
mutant of OUT/shardK's listing that has no outcome there yet.
"""
import json
import pathlib
import re
import sys


def outcomes(run: pathlib.Path) -> list:
    """The mutant outcomes of one cargo-mutants output dir (no baseline)."""
    d = json.loads((run / "outcomes.json").read_text())
    return [o for o in d["outcomes"]
            if isinstance(o["scenario"], dict) and "Mutant" in o["scenario"]]


def listing(run: pathlib.Path) -> list:
    """Names of the mutants the run was given (its mutants.json)."""
    return [m["name"] for m in json.loads((run / "mutants.json").read_text())]


def untested(shard: pathlib.Path) -> int:
    run = shard / "mutants.out"
    try:
        done = {o["scenario"]["Mutant"]["name"] for o in outcomes(run)}
        names = listing(run)
    except (OSError, KeyError, json.JSONDecodeError) as e:
        print(f"{run}: cannot read outcomes.json and mutants.json: {e}", file=sys.stderr)
        return 1
    for n in names:
        if n not in done:
            print(f"^{re.escape(n)}$")
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--untested":
        return untested(pathlib.Path(sys.argv[2]))
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    root = pathlib.Path(sys.argv[1])
    files = sorted(root.glob("shard*/mutants.out/outcomes.json"),
                   key=lambda p: int(p.parent.parent.name[5:] or 0))
    if not files:
        print(f"{root}: no shard*/mutants.out/outcomes.json here", file=sys.stderr)
        return 1
    cols = ["caught", "missed", "timeout", "unviable"]
    total = dict.fromkeys(["tested"] + cols, 0)
    lists = {"missed": [], "timeout": []}
    print("| shard | mutants | tested | caught | missed | timeout | unviable | killed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for f in files:
        rest = f.parent.parent / "rest" / "mutants.out"
        try:
            names = listing(f.parent)
            runs = outcomes(f.parent)
            if rest.exists():
                own = set(names)
                done = {o["scenario"]["Mutant"]["name"] for o in runs}
                runs += [o for o in outcomes(rest)
                         if o["scenario"]["Mutant"]["name"] in own - done]
        except (OSError, KeyError, json.JSONDecodeError) as e:
            print(f"{f}: cannot read: {e}", file=sys.stderr)
            return 1
        counts = dict.fromkeys(cols, 0)
        for o in runs:
            m = o["scenario"]["Mutant"]
            kind = {"CaughtMutant": "caught", "MissedMutant": "missed",
                    "Timeout": "timeout", "Unviable": "unviable"}.get(o["summary"])
            if kind is None:
                continue
            counts[kind] += 1
            if kind in lists:
                lists[kind].append(m["name"])
        tested = sum(counts.values())
        viable = counts["caught"] + counts["missed"] + counts["timeout"]
        rate = f"{100 * (viable - counts['missed']) / viable:.0f}%" if viable else "-"
        print(f"| {f.parent.parent.name[5:]} | {len(names)} | {tested} | "
              + " | ".join(str(counts[c]) for c in cols) + f" | {rate} |")
        total["tested"] += tested
        for c in cols:
            total[c] += counts[c]
    viable = total["caught"] + total["missed"] + total["timeout"]
    rate = f"{100 * (viable - total['missed']) / viable:.0f}%" if viable else "-"
    print(f"| all | | {total['tested']} | "
          + " | ".join(str(total[c]) for c in cols) + f" | {rate} |")
    for kind, names in lists.items():
        if names:
            print(f"\n{kind}:")
            for n in names:
                print(f"- {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
