#!/usr/bin/env python3
"""Summarise cargo-mutants shards: OUT/shard*/mutants.out/outcomes.json.

Usage: python3 scripts/mutants-summary.py OUT

Prints per shard: mutants in the shard, tested, caught, missed, timeout,
unviable, and the kill rate over viable tested mutants (caught + timeout
over caught + timeout + missed), then the total and every missed or
timed-out mutant by name, for TESTING.md.
"""
import json
import pathlib
import sys


def main() -> int:
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
        try:
            d = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"{f}: cannot read: {e}", file=sys.stderr)
            return 1
        counts = dict.fromkeys(cols, 0)
        for o in d["outcomes"]:
            m = o["scenario"].get("Mutant") if isinstance(o["scenario"], dict) else None
            if m is None:
                continue  # the baseline
            kind = {"CaughtMutant": "caught", "MissedMutant": "missed",
                    "Timeout": "timeout", "Unviable": "unviable"}.get(o["summary"])
            if kind is None:
                continue
            counts[kind] += 1
            if kind in lists:
                lists[kind].append(m["name"])
        # A shard continued with MUTANTS_RESUME=1 (--iterate) lists what
        # its earlier runs caught in previously_caught.txt, not in outcomes.
        prev = f.parent / "previously_caught.txt"
        if prev.exists():
            counts["caught"] += sum(1 for line in prev.read_text().splitlines() if line.strip())
        tested = sum(counts.values())
        viable = counts["caught"] + counts["missed"] + counts["timeout"]
        rate = f"{100 * (viable - counts['missed']) / viable:.0f}%" if viable else "-"
        print(f"| {f.parent.parent.name[5:]} | {d['total_mutants']} | {tested} | "
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
