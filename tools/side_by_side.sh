#!/usr/bin/env bash
# Two builds of s5vec side by side over HTTP: one data directory built once (by the OLD
# build), copied, both daemons up at once, search load alternating between them ROUNDS times
# so both see the same host load. Prints QPS, server p50 and recall per run.
#
#   OLDPY="env PYTHONPATH=/tmp/olddeps /tmp/oldvenv/bin/python" NEWPY=.venv/bin/python \
#     tools/side_by_side.sh [ROUNDS]
#
# OLDPY/NEWPY: a Python that imports each build's s5vec (e.g. a worktree of an older commit
# installed into its own venv). The load generator is the new build's s5vec_tools.http_load.
set -euo pipefail
ROUNDS=${1:-4}
: "${OLDPY:?set OLDPY to the old build's python}" "${NEWPY:?set NEWPY to the new build's python}"
DATA=${DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data/minilm-100k}
W=$(mktemp -d /tmp/s5vec-side-by-side-XXXX)
export S5VEC_HTTP__QUERY_CACHE_ENTRIES=0
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
$OLDPY -m s5vec.daemon.cli serve --data-dir "$W/a" --port 7601 > "$W/a.log" 2>&1 &
until curl -sf localhost:7601/ready > /dev/null; do sleep 0.5; done
curl -s -X POST localhost:7601/api/v1/collections -H 'Content-Type: application/json' \
  -d '{"name":"bench","dimension":384,"metric":"cosine"}' > /dev/null
$NEWPY -m s5vec_tools.http_load ingest --url http://127.0.0.1:7601 --data "$DATA" --out "$W/ingest.json" > /dev/null
until [ "$(curl -s localhost:7601/api/v1/collections/bench | python3 -c 'import sys,json; print(json.load(sys.stdin)["pending"])')" = 0 ]; do sleep 2; done
curl -s -X POST localhost:7601/api/v1/admin/checkpoint > /dev/null
kill -TERM %1; wait %1 || true
cp -r "$W/a" "$W/b"
$OLDPY -m s5vec.daemon.cli serve --data-dir "$W/a" --port 7601 > "$W/a.log" 2>&1 &
$NEWPY -m s5vec.daemon.cli serve --data-dir "$W/b" --port 7602 > "$W/b.log" 2>&1 &
until curl -sf localhost:7601/ready > /dev/null && curl -sf localhost:7602/ready > /dev/null; do sleep 0.5; done
for round in $(seq "$ROUNDS"); do
  for side in old new; do
    port=7601; [ "$side" = new ] && port=7602
    $NEWPY -m s5vec_tools.http_load search --url "http://127.0.0.1:$port" --data "$DATA" --out "$W/$side-$round.json" \
      --runs 10x8,64x8,defaultx1 --min-time 4 --queries 1000 --gt "$DATA/gt.i32.npy" > /dev/null
    python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
print(sys.argv[2], sys.argv[3], '  '.join(f\"{x.get('ef')}x{x['clients']}: {x['qps']:.0f} qps (server p50 {x.get('server_search_time_ms_p50')} ms, R {x.get('recall@10')})\" for x in r['runs']))
" "$W/$side-$round.json" "$side" "$round"
  done
done
rm -rf "$W"
