#!/usr/bin/env bash
# Set up Sortie and train the example model end to end on the embedded default:
# a local nats-server with JetStream, the scheduler and one agent for the `local` target.
set -euo pipefail
cd "$(dirname "$0")"
./setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# as root, runs start as the unprivileged user sortie-run: make it, and let it reach its runs
data_dir=$(python -c 'from sortie.bus.profile import default_data_dir; print(default_data_dir())')
deploy/run-user.sh "$data_dir/agent" "$(readlink -f .venv/bin/python)"

started=""
stop_up() {
    if [ -n "$started" ] && kill -0 "$started" 2>/dev/null; then
        kill -TERM "$started" && wait "$started" || true
        echo "== stopped the embedded Sortie (its state stays in its data directory)"
    fi
}
trap stop_up EXIT

if sortie run list >/dev/null 2>&1; then
    echo "== using the Sortie that is already running"
else
    log=$(mktemp -t sortie-up.XXXXXX.log)
    sortie up >"$log" 2>&1 &
    started=$!
    for _ in $(seq 1 150); do
        grep -q "Sortie ready" "$log" && break
        kill -0 "$started" 2>/dev/null || { cat "$log"; exit 1; }
        sleep 0.2
    done
    grep "Sortie ready" "$log" || { cat "$log"; echo "sortie up did not start" >&2; exit 1; }
    echo "== daemon log: $log"
fi

echo "== sortie run submit examples/sklearn-digits --script train.py --experiment digits --pip scikit-learn -- --C 0.5"
run=$(sortie run submit examples/sklearn-digits --script train.py --experiment digits \
      --pip scikit-learn --output json -- --C 0.5 | python3 -c 'import json,sys; print(json.load(sys.stdin)["run_id"])')
echo "== sortie run logs $run --follow"
sortie run logs "$run" --follow
sortie run wait "$run"
echo "== sortie run show $run"
sortie run show "$run"
echo "== sortie run download $run ./out"
sortie run download "$run" ./out            # into ./out/$run/
dashboard=$(python -c '
from sortie.bus.profile import read_profile
print((read_profile() or {}).get("dashboard_url") or "")')
if [ -n "$dashboard" ]; then
    echo "== the dashboard: ${dashboard}runs/$run"
    python - "${dashboard}runs/$run" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={"Accept": "text/html"}), timeout=30) as page:
    assert page.status == 200, page.status
    print(f"   served ({len(page.read())} bytes); open it in a browser while `sortie up` runs")
PY
fi
cat <<NEXT

Where to look next:
  sortie run list                       every run, newest first
  sortie run show $run --output json
  ls ./out/$run/outputs                 the trained model and its metrics
  sortie up                             keep Sortie running in a terminal, then submit from another
                                        (its dashboard: http://127.0.0.1:8265/)
  README.md, ARCHITECTURE.md, docs/protocol.md
NEXT
