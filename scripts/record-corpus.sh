#!/bin/sh
# Record the real-program regression corpus (tests/data/README.md, "Corpus").
#
#   scripts/record-corpus.sh small OUT_DIR   the recordings committed in tests/data
#   scripts/record-corpus.sh large OUT_DIR   the larger ones (5-50+ MB each), kept
#                                            as this recipe; tests/data/corpus.tsv
#                                            lists their expected results
#
# Needs Valgrind, gcc, make, gzip, xz, sqlite3 and Debian's /usr/bin/python3
# (not a pyenv shim, which is a shell script). Inputs are generated here, so
# the same machine gives the same programs on the same data; traces still
# differ slightly between machines and runs (addresses of the environment,
# the interleaving of concurrent processes: see tests/data/README.md).
# Check the results with:
#   VMEMSIM_CORPUS=OUT_DIR cargo test --release -p vmemsim --test modes_table -- --ignored --nocapture
set -eu

set_name=${1:?usage: $0 small|large OUT_DIR}
out=${2:?usage: $0 small|large OUT_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
vmemsim=${VMEMSIM:-$root/target/release/vmemsim}
[ -x "$vmemsim" ] || (cd "$root" && cargo build --release -q)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# rec NAME CMD...: record CMD into OUT_DIR/NAME.vmt (never over an existing file).
rec() {
    name=$1
    shift
    if [ -e "$out/$name.vmt" ]; then
        echo "$out/$name.vmt exists: kept" >&2
        return
    fi
    "$vmemsim" record -o "$out/$name.vmt" -- "$@" >/dev/null
}

# Inputs: numbers as text, and three small C files with a Makefile.
seq 1 3000 >nums-small.txt
seq 1 60000 >nums-large.txt
cat >a.c <<'C'
#include <stdio.h>
int sum(int n);
int main(void) { printf("%d\n", sum(100)); return 0; }
C
cat >b.c <<'C'
int sq(int x) { return x * x; }
C
cat >c.c <<'C'
int sq(int x);
int sum(int n) { int s = 0; for (int i = 0; i < n; i++) s += sq(i); return s; }
C
printf 'prog: a.o b.o c.o\n\tgcc -o prog a.o b.o c.o\n%%.o: %%.c\n\tgcc -O1 -c $<\n' >Makefile
# Assembler-only build: make running `as` on three files, then `ld`.
for f in x y z; do printf '.globl f_%s\nf_%s:\n ret\n' $f $f >$f.s; done
printf '.globl _start\n_start:\n mov $60, %%eax\n xor %%edi, %%edi\n syscall\n' >start.s
printf 'prog-as: start.o x.o y.o z.o\n\tld -o prog-as start.o x.o y.o z.o\n%%.o: %%.s\n\tas -o $@ $<\n' >Makefile.as

# A small Python test suite (unittest), scaled by N.
cat >test_corpus.py <<'PY'
import json, os, re, unittest
N = int(os.environ.get("N", "200"))
class T(unittest.TestCase):
    def test_sort(self):
        xs = [(i * 7919) % N for i in range(N)]
        self.assertEqual(sorted(xs), sorted(set(xs)))
    def test_dict(self):
        d = {str(i): i for i in range(N)}
        self.assertEqual(sum(d.values()), N * (N - 1) // 2)
    def test_json(self):
        doc = [{"k": i, "v": [i] * 3} for i in range(N)]
        self.assertEqual(json.loads(json.dumps(doc)), doc)
    def test_re(self):
        text = " ".join("w%d" % i for i in range(N))
        self.assertEqual(len(re.findall(r"w\d+", text)), N)
PY

SQL_SMALL="create table t(k integer primary key, v text);
begin; insert into t(v) select printf('row %d', value) from generate_series(1, 300); commit;
create index tv on t(v); select count(*), max(length(v)) from t where v like 'row 1%';"
SQL_LARGE="create table t(k integer primary key, v text, n real);
begin; insert into t(v, n) select printf('row %d', value), value * 0.5 from generate_series(1, 20000); commit;
create index tv on t(v); select count(*), sum(n), max(length(v)) from t where v like 'row 1%';
select v, count(*) from t group by k % 17 order by 2 desc limit 3;"

case $set_name in
small)
    rec gzip-small gzip -6 -c nums-small.txt
    rec xz-small xz -1 -c nums-small.txt
    rec sqlite-small sqlite3 :memory: "$SQL_SMALL"
    rec fork-workers sh -c 'for i in 1 2 3 4; do (seq $i 400 | sort -rn | head -1 >/dev/null) & done; wait'
    # .vmt version 3: mmap events name their files (issue 10, page contents).
    rec sh-echo-wc-files sh -c 'echo hello | wc -c'
    ;;
large)
    rec make-gcc make -s
    rec make-as make -s -f Makefile.as
    rec python-small /usr/bin/python3 -I -S -c 'd = {i: str(i) for i in range(3000)}; print(sorted(d.values())[:2])'
    rec gzip-large gzip -6 -c nums-large.txt
    rec xz-large xz -6 -c nums-large.txt
    rec sqlite-large sqlite3 :memory: "$SQL_LARGE"
    rec python-unittest env N=2000 /usr/bin/python3 -m unittest -q test_corpus
    rec xargs-workers sh -c 'seq 1 8 | xargs -P 4 -I N sh -c "seq N 20000 | sort -n | md5sum >/dev/null"'
    ;;
*)
    echo "unknown set $set_name (small or large)" >&2
    exit 2
    ;;
esac
ls -l "$out"
