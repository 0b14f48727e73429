#!/usr/bin/env bash
# Runs three `discoverd server` processes on 127.0.0.1:7001-7003 with data
# under ./local-cluster (kept between runs), the way a real cluster runs —
# one process per node, each with health and metrics on
# http://127.0.0.1:7101-7103. Ctrl-C stops all three. For a throwaway cluster in one
# process, `go run ./cmd/discoverd dev` is simpler.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/discoverd ./cmd/discoverd
PEERS=n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003
pids=()
for i in 1 2 3; do
  mkdir -p local-cluster
  bin/discoverd server -id n$i -addr 127.0.0.1:700$i -data-dir local-cluster/n$i -peers $PEERS \
    -http-addr 127.0.0.1:710$i -log-level warn 2>local-cluster/n$i.log &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
echo "export DISCOVERD=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003   (logs in local-cluster/)"
echo "health and metrics: http://127.0.0.1:7101/metrics (7102, 7103)"
wait
