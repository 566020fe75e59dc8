#!/bin/sh
# Run one target for $2 seconds (default 1800) at the lowest priority,
# continuing past crashes (each is saved under artifacts/TARGET/).
t=$1; secs=${2:-1800}
mkdir -p logs artifacts/$t
exec nice -n 19 cargo +nightly fuzz run -O -a $t -- -max_total_time=$secs -rss_limit_mb=2048 \
  -fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 -timeout=30 > logs/$t.log 2>&1
