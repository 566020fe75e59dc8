#!/bin/bash
# Run round-robin shard K of N of issue 11's mutation scope (TESTING.md,
# "Mutation testing") in a private clone of this repository at HEAD, so the
# --in-place run never touches your tree, and keep cargo-mutants' output in
# OUT/shardK/mutants.out.
#
#   scripts/mutants-shard.sh K N OUT
#
# On a Slurm cluster: `sbatch --array=0-24 scripts/mutants.sbatch`, then
# `python3 scripts/mutants-summary.py OUT`.
# MUTANTS_SEED_TARGET=DIR copies an existing target directory of this
# repository into the clone first (saves the first full build).
# MUTANTS_RESUME=1 continues a shard whose OUT/shardK exists (a run that
# was stopped): the mutants of its listing that have no outcome there are
# run by name into OUT/shardK/rest/mutants.out, which
# scripts/mutants-summary.py adds to the shard's row. (Not `--iterate`:
# cargo-mutants shards the list left after its exclusions, so a resumed
# shard K would test another shard's mutants.) Names carry file, line and
# column: resume on the tree the shard started on. cargo-mutants 27.1.0
# also runs every "delete field" mutant whatever the -F filter; the
# summary counts only the shard's own.
# Needs cargo-mutants 27.1.0 (`cargo install cargo-mutants --version 27.1.0
# --locked`) and cargo-nextest.
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 K N OUT (shard K of N, 0 <= K < N)" >&2
    exit 2
fi
k=$1 n=$2 out=$3
case "$k$n" in *[!0-9]*) echo "$0: K and N must be numbers, got '$k' and '$n'" >&2; exit 2 ;; esac
if [ "$k" -ge "$n" ]; then
    echo "$0: shard K=$k must be below N=$n" >&2
    exit 2
fi
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
mkdir -p "$out"
out=$(cd "$out" && pwd)
select=(--shard "$k/$n" --sharding round-robin)
dest=$out/shard$k
if [ -e "$out/shard$k" ]; then
    if [ "${MUTANTS_RESUME:-}" != 1 ]; then
        echo "$0: $out/shard$k exists; move it away first, or set MUTANTS_RESUME=1 to continue it (nothing is overwritten)" >&2
        exit 1
    fi
    dest=$out/shard$k/rest
    if [ -e "$dest" ]; then
        echo "$0: $dest exists (shard $k was resumed before); move it away first" >&2
        exit 1
    fi
    select=()
    untested=$(python3 "$repo/scripts/mutants-summary.py" --untested "$out/shard$k")
    while IFS= read -r re; do
        [ -n "$re" ] && select+=(-F "$re")
    done <<< "$untested"
    if [ ${#select[@]} -eq 0 ]; then
        echo "$0: every mutant of shard $k has an outcome in $out/shard$k; nothing to resume"
        exit 0
    fi
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/vmemsim-mutants-$k.XXXXXX")
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/vmemsim"
cd "$work/vmemsim"
git -c advice.detachedHead=false checkout -q "$(git -C "$repo" rev-parse HEAD)"
if [ -n "${MUTANTS_SEED_TARGET:-}" ]; then
    cp -a "$MUTANTS_SEED_TARGET" target
fi
# --timeout: the fast set runs in under a minute; a mutant that makes it
# hang (a loop whose counter no longer moves) is a timeout, counted apart.
cargo mutants -p vmemsim --in-place --baseline skip --timeout 150 --build-timeout 600 \
    --test-tool nextest "${select[@]}" \
    -f 'crates/vmemsim/src/mmu/*.rs' -f 'crates/vmemsim/src/hv/*.rs' \
    -f 'crates/vmemsim/src/hv/*/*.rs' -f 'crates/vmemsim/src/guest/*.rs' \
    -f 'crates/vmemsim/src/guest/*/*.rs' -f crates/vmemsim/src/cost.rs \
    -o "$dest" || rc=$?
# Exit 2 (mutants missed) and 3 (timeouts) are results; anything else
# (1: bad usage, 4: the build or a baseline failed) is not.
case ${rc:-0} in
    0 | 2 | 3) ;;
    *)
        echo "$0: cargo mutants failed with exit ${rc}: see $dest/mutants.out/log" >&2
        exit "$rc"
        ;;
esac
test -f "$dest/mutants.out/outcomes.json"
