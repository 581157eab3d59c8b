#!/usr/bin/env bash
# Prepare this machine for a Sortie agent that runs as root (`sortie up` as root, systemd):
# it starts every run as the unprivileged user `sortie-run` (sortie.agents.isolation
# .DEFAULT_RUN_USER; another with SORTIE_RUN_USER), and refuses to start without it. That user
# must also be able to pass (o+x: enter, never list) every directory above the paths given:
# the agent's data dir and the Python interpreter runs use.
#
#   deploy/run-user.sh [PATH ...]     idempotent; does nothing unless run as root
set -euo pipefail
RUN_USER=${SORTIE_RUN_USER:-sortie-run}
say() { echo "run-user: $*"; }

if [ "$(id -u)" != 0 ]; then
    exit 0  # an unprivileged agent confines its runs with Landlock instead: nothing to do
fi
if ! id "$RUN_USER" >/dev/null 2>&1; then
    say "creating user '$RUN_USER' (agents started as root start their runs as it)"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$RUN_USER"
fi
for path in "$@"; do
    dir=$(dirname "$path")
    while [ "$dir" != / ]; do
        if [ -d "$dir" ] && [ $(( 0$(stat -c %a "$dir") & 1 )) = 0 ]; then
            say "letting '$RUN_USER' pass $dir (chmod o+x: enter, not list) to reach $path"
            chmod o+x "$dir"
        fi
        dir=$(dirname "$dir")
    done
done
