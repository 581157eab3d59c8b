#!/usr/bin/env bash
# System setup the SSH, container and browser tests need (idempotent; test.sh runs it):
#   - OpenSSH's sshd binary (Debian package openssh-server), installed WITHOUT starting or
#     enabling the system's sshd service: the tests start their own on 127.0.0.1;
#   - the test user `sortie-test` with the password tests/ssh/conftest.py names;
#   - a Python >= 3.11 that user can run (the remote side of an agent install);
#   - /run/sshd (sshd's privilege-separation directory);
#   - Slurm (slurm-wlm, munge) and a Java runtime for the engine tests (tests/engines).
# Without root or apt-get it says what it could not do and exits 0; the SSH fixtures then
# fail with a message pointing here.
set -uo pipefail
cd "$(dirname "$0")/.."

TEST_USER=sortie-test
# The one place the password lives is tests/ssh/conftest.py; read it from there.
TEST_PASSWORD=$(sed -n 's/^SSH_TEST_PASSWORD = "\(.*\)"$/\1/p' tests/ssh/conftest.py)

say() { echo "setup-system: $*"; }

if [ "$(id -u)" != 0 ]; then
    say "not root: cannot install openssh-server or create user '$TEST_USER'."
    say "run 'sudo tests/setup-system.sh' once; the SSH tests fail until then."
    exit 0
fi

if [ ! -x /usr/sbin/sshd ]; then
    if ! command -v apt-get >/dev/null; then
        say "no apt-get: install OpenSSH's sshd at /usr/sbin/sshd yourself."
    else
        say "installing openssh-server (its service is neither started nor enabled)"
        # policy-rc.d answering 101 tells invoke-rc.d not to start services during install.
        had_policy=0
        if [ -e /usr/sbin/policy-rc.d ]; then had_policy=1; fi
        if [ "$had_policy" = 0 ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 0755 /usr/sbin/policy-rc.d
        fi
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends openssh-server >/dev/null; }; then
            say "could not install openssh-server (see apt-get's output above)."
        fi
        if [ "$had_policy" = 0 ]; then rm -f /usr/sbin/policy-rc.d; fi
    fi
fi

# The container tests need a real engine: Podman's Docker-compatible API (tests start it with
# their own containers.conf), runc, and busybox-static for a locally built test image.
missing=""
for tool in podman runc busybox; do
    command -v "$tool" >/dev/null || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    if command -v apt-get >/dev/null; then
        say "installing podman, runc, busybox-static (missing:$missing)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends podman runc \
            busybox-static uidmap slirp4netns >/dev/null; } || say "could not install them."
    else
        say "no apt-get: install podman, runc and busybox yourself."
    fi
fi

# The dashboard's browser tests drive Debian's Chromium headless through Playwright (which
# downloads no browser: tests/web/conftest.py points it at /usr/bin/chromium).
if [ ! -x /usr/bin/chromium ]; then
    if command -v apt-get >/dev/null; then
        say "installing chromium (for the dashboard's browser tests)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium \
            fonts-dejavu-core >/dev/null; } || say "could not install chromium."
    else
        say "no apt-get: install Chromium at /usr/bin/chromium yourself."
    fi
fi

# The engine tests (tests/engines) start a one-node Slurm cluster (slurmctld, slurmd, munged)
# and a Spark standalone cluster (pyspark from the lock, on Debian's Java) on 127.0.0.1.
# Installed WITHOUT starting or enabling their services: the fixtures start their own.
missing=""
for tool in slurmctld slurmd sbatch munged java; do
    command -v "$tool" >/dev/null || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    if command -v apt-get >/dev/null; then
        say "installing slurm-wlm, munge, default-jre-headless (missing:$missing)"
        had_policy=0
        if [ -e /usr/sbin/policy-rc.d ]; then had_policy=1; fi
        if [ "$had_policy" = 0 ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 0755 /usr/sbin/policy-rc.d
        fi
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm \
            munge default-jre-headless >/dev/null; } || say "could not install them."
        if [ "$had_policy" = 0 ]; then rm -f /usr/sbin/policy-rc.d; fi
        if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
            systemctl disable --now slurmctld slurmd munge >/dev/null 2>&1 || true
        fi
    else
        say "no apt-get: install slurm-wlm, munge and a Java runtime yourself."
    fi
fi

# Make sure the distribution's sshd service is not running or enabled (the tests start their own).
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
fi
if [ -f /run/sshd.pid ]; then
    pid=$(cat /run/sshd.pid 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && \
        grep -q sshd "/proc/$pid/comm" 2>/dev/null; then
        say "stopping the system's sshd (pid $pid)"
        kill "$pid" || true
    fi
fi
mkdir -p /run/sshd
chmod 0755 /run/sshd

if ! id "$TEST_USER" >/dev/null 2>&1; then
    say "creating user '$TEST_USER'"
    useradd --create-home --home-dir "/home/$TEST_USER" --shell /bin/bash "$TEST_USER" || \
        say "could not create user '$TEST_USER'."
fi
if id "$TEST_USER" >/dev/null 2>&1; then
    if [ -n "$TEST_PASSWORD" ]; then
        echo "$TEST_USER:$TEST_PASSWORD" | chpasswd || say "could not set $TEST_USER's password."
    else
        say "no SSH_TEST_PASSWORD found in tests/ssh/conftest.py; password left unchanged."
    fi
    install -d -m 0700 -o "$TEST_USER" -g "$TEST_USER" "/home/$TEST_USER/.ssh"
    # The remote side of an agent install needs Python >= 3.11 on the user's PATH.
    found=""
    for py in /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11 /usr/bin/python3 \
              /usr/local/bin/python3; do
        if [ -x "$py" ] && su -s /bin/sh "$TEST_USER" -c \
            "$py -c 'import sys; sys.exit(sys.version_info < (3, 11))'" 2>/dev/null; then
            found=$py
            break
        fi
    done
    if [ -z "$found" ] && command -v apt-get >/dev/null; then
        say "installing python3 for $TEST_USER"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 >/dev/null || true
        if /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            found=/usr/bin/python3
        fi
    fi
    if [ -n "$found" ]; then
        say "$TEST_USER can run $($found --version 2>&1) at $found"
    else
        say "no Python >= 3.11 usable by $TEST_USER: the agent-install tests will fail."
    fi
fi
# Agents started as root (the tests, systemd) start each run as the unprivileged user
# sortie-run, which must be able to run the tests' Python (its base may live under /root).
python=$(readlink -f .venv/bin/python 2>/dev/null || command -v python3)
deploy/run-user.sh "$python" || say "could not prepare the run user (see above)."
if [ -x /usr/sbin/sshd ]; then
    say "sshd at /usr/sbin/sshd ($(/usr/sbin/sshd -V 2>&1 | head -n1 || true))"
fi
exit 0
