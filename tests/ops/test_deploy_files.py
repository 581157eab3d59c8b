"""The operator files in deploy/: the Grafana dashboard and the Prometheus alerts query only
metrics the scheduler exports (checked against a real scrape), the scrape config points at
the port the units and compose file serve on, the systemd units parse and pass
`systemd-analyze verify`, and the compose file's references hold. The compose installation's
broker config and daemon commands are also run here, as written, without containers."""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sortie.bus.broker import BrokerProcess, free_port, nats_server_binary, port_in_use
from sortie.scheduler.daemon import SchedulerConfig, run_scheduler
from tests.e2e.conftest import REPO, SORTIE
from tests.ops.scrape import Scrape, scrape, scrape_sync

DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "sortie-dashboard.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "sortie-alerts.yml"
COMPOSE = DEPLOY / "compose.yaml"
UNITS = DEPLOY / "systemd"
METRICS_PORT = 9478  # what the units, compose file and scrape config agree on

# Series Prometheus makes itself for every scrape target.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
PROMQL_WORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- PromQL: which metrics an expression reads -------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords, labels and literals removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\$\w+", " ", text)  # dashboard variables
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # grouping labels
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):  # a function
            continue
        if word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def test_metric_names_from_promql() -> None:
    quantile = (
        'histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="y",z=~"$t"}[$__rate_interval])))'
    )
    assert metric_names(quantile) == {"a_bucket"}
    assert metric_names('sum(b{s!="Q"}) / (sum(c_total) + sum(d)) or vector(0)') == {
        "b",
        "c_total",
        "d",
    }
    assert metric_names("max by (target) (e) > 3600 and on() f == 1") == {"e", "f"}


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            # label_values(METRIC, label): the metric is what it reads
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", var["definition"])
            assert m, f"variable {var['name']}: unexpected query {var['definition']!r}"
            exprs.append(m.group(1))
    return exprs


def alert_queries() -> list[str]:
    return [r["expr"] for g in load_yaml(ALERTS)["groups"] for r in g["rules"]]


def exported(scraped: Scrape, name: str) -> bool:
    """Is ``name`` a series the scrape has (a counter's _total, a histogram's _bucket...)?"""
    if name in scraped.types or name in scraped.sample_names():
        return True
    for suffix, kinds in (
        ("_total", {"counter"}),
        ("_created", {"counter", "histogram"}),
        ("_bucket", {"histogram"}),
        ("_sum", {"histogram"}),
        ("_count", {"histogram"}),
    ):
        if name.endswith(suffix) and scraped.types.get(name.removesuffix(suffix)) in kinds:
            return True
    return False


@pytest.fixture
async def fresh_scrape(broker: BrokerProcess, tmp_path: Path) -> AsyncIterator[Scrape]:
    """A scrape of a scheduler that has seen nothing yet: what exists from the start."""
    port = free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    cfg = SchedulerConfig(url=broker.url, data_dir=tmp_path / "s", metrics_port=port)
    task = asyncio.create_task(run_scheduler(cfg, stop, ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield await scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


def test_dashboard_and_alerts_query_only_exported_metrics(fresh_scrape: Scrape) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = set()
    for expr in [*dashboard_queries(dashboard), *alert_queries()]:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        used |= names
    missing = sorted(n for n in used - PROMETHEUS_OWN if not exported(fresh_scrape, n))
    assert not missing, f"queried but not exported: {missing}"
    # and the dashboard shows every family the scheduler exports
    ours = {
        name
        for name in fresh_scrape.types
        if name.startswith("sortie_") and not name.endswith("_created")  # creation times
    }
    shown = {n for n in ours if any(u == n or u.startswith(n + "_") for u in used)}
    assert ours - shown == set(), f"exported but on no panel: {sorted(ours - shown)}"


def test_dashboard_is_a_grafana_dashboard() -> None:
    d = json.loads(DASHBOARD.read_text())
    for key in ("title", "uid", "schemaVersion", "panels", "templating", "time"):
        assert key in d, key
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in d["panels"]:
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["type"] in {"timeseries", "stat", "gauge", "table", "bargauge"}, p["type"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
    # panels do not overlap
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine


def test_prometheus_config_scrapes_the_scheduler_and_loads_the_alerts() -> None:
    cfg = load_yaml(PROMETHEUS)
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "sortie-scheduler"]
    assert job["metrics_path"] == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    # the compose services: the leader and its standby
    assert targets == [f"scheduler:{METRICS_PORT}", f"scheduler-2:{METRICS_PORT}"]
    for rule_file in cfg["rule_files"]:
        assert (PROMETHEUS.parent / rule_file).is_file(), rule_file
    rules = [r for g in load_yaml(ALERTS)["groups"] for r in g["rules"]]
    assert rules
    for r in rules:
        assert set(r) >= {"alert", "expr", "for", "labels", "annotations"}, r
        assert r["labels"]["severity"] in {"critical", "warning", "info"}
        assert re.fullmatch(r"\d+[smh]", r["for"])
    # the dashboard's "Scheduler up" and the alert use the job name of the scrape config
    dashboard = json.loads(DASHBOARD.read_text())
    assert any('job="sortie-scheduler"' in e for e in dashboard_queries(dashboard))


def test_grafana_provisioning_matches_compose() -> None:
    compose = load_yaml(COMPOSE)
    ds = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    dashboards = load_yaml(DEPLOY / "grafana/provisioning/dashboards/sortie.yml")
    (provider,) = dashboards["providers"]
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(
        v.split(":")[1].startswith(provider["options"]["path"] + "/")
        and v.startswith("./grafana/sortie-dashboard.json")
        for v in mounts
    )


# --- systemd -------------------------------------------------------------------------------------


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


@pytest.mark.parametrize(
    "name", ["sortie-scheduler.service", "sortie-agent@.service", "sortie-nats@.service"]
)
def test_units_are_hardened_and_restart(name: str) -> None:
    unit = read_unit(UNITS / name)
    svc = unit["Service"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network-online.target" in unit["Unit"]["After"]
    assert svc["User"] in {"sortie", "sortie-nats"}  # a dedicated user, never root
    assert svc["Restart"] == "on-failure"
    for key, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictSUIDSGID", "yes"),
        ("ProtectKernelModules", "yes"),
    ):
        assert svc.get(key) == value, f"{name}: {key}"
    assert svc["ProtectHome"] in {"yes", "read-only"}
    # everything the daemon writes is under its state directory, writable under strict
    state = "/var/lib/" + svc["StateDirectory"]
    assert state in svc["ReadWritePaths"].split()
    assert svc["ExecStart"].startswith("/opt/sortie/venv/bin/")


def test_unit_specifics() -> None:
    sched = read_unit(UNITS / "sortie-scheduler.service")["Service"]
    assert f"--metrics-port {METRICS_PORT}" in sched["ExecStart"]
    assert "--data-dir /var/lib/sortie/scheduler" in sched["ExecStart"]
    assert sched["SystemCallFilter"] == "@system-service"
    agent = read_unit(UNITS / "sortie-agent@.service")["Service"]
    # agents run training code: GPUs visible, JITs allowed (see the unit's comments)
    for key in ("PrivateDevices", "MemoryDenyWriteExecute", "SystemCallFilter"):
        assert key not in agent, key
    assert "--target %i" in agent["ExecStart"]
    assert agent["LimitMEMLOCK"] == "infinity"
    nats = read_unit(UNITS / "sortie-nats@.service")["Service"]
    assert nats["EnvironmentFile"] == "/etc/sortie/nats-%i.env"
    assert nats["KillSignal"] == "SIGUSR2"  # lame duck on stop
    for i in (1, 2, 3):  # the env files of deploy/nats/ put the store in the state directory
        env = dict(
            line.split("=", 1)
            for line in (DEPLOY / "nats" / f"nats-{i}.env").read_text().splitlines()
            if line and not line.startswith("#")
        )
        assert env["SORTIE_NATS_STORE_DIR"] == "/var/lib/" + nats["StateDirectory"]


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here; the units are still parsed above")
    # verify checks that ExecStart's program exists: point it at this checkout's venv
    venv = Path(SORTIE[0]).parent.parent if len(SORTIE) == 1 else REPO / ".venv"
    names = []
    for name, instance in (
        ("sortie-scheduler.service", "sortie-scheduler.service"),
        ("sortie-agent@.service", "sortie-agent@gpu-box.service"),
        ("sortie-nats@.service", "sortie-nats@1.service"),
    ):
        text = (UNITS / name).read_text().replace("/opt/sortie/venv", str(venv))
        (tmp_path / instance).write_text(text)
        names.append(f"./{instance}")
    proc = subprocess.run(
        [analyze, "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "", (
        proc.stdout + proc.stderr
    )


# --- compose ----------------------------------------------------------------------------------


def test_compose_references_hold() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert set(services) == {
        "auth",
        "nats",
        "scheduler",
        "scheduler-2",
        "agent",
        "prometheus",
        "grafana",
    }
    named = set(compose["volumes"])
    for name, svc in services.items():
        assert "image" in svc, name
        for dep in svc.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name}: {src} does not exist"
            else:
                assert src in named, f"{name}: volume {src} is not declared"
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"
    build = services["scheduler"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert {s for s, v in services.items() if v["image"] == "localhost/sortie:latest"} == {
        "auth",
        "scheduler",
        "scheduler-2",
        "agent",
    }
    # the standby runs what the leader runs, on its own volume
    assert services["scheduler-2"]["command"] == services["scheduler"]["command"]
    assert services["scheduler-2"]["volumes"] != services["scheduler"]["volumes"]
    assert f"--metrics-port={METRICS_PORT}" in services["scheduler"]["command"]
    assert "--metrics-host=0.0.0.0" in services["scheduler"]["command"]
    # the broker's config includes the authority the auth service writes into the same volume
    nats_conf = (DEPLOY / "compose" / "nats.conf").read_text()
    assert "include ./auth/broker.conf" in nats_conf
    assert "auth:/etc/nats/auth:ro" in services["nats"]["volumes"]
    agent_creds = next(a for a in services["agent"]["command"] if a.startswith("--creds="))
    assert agent_creds.removeprefix("--creds=/auth/") in services["auth"]["command"][0]
    assert "--name=agent-1" in services["agent"]["command"]
    assert "--agent-id agent-1" in services["auth"]["command"][0]


def test_dockerfile_and_its_context() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM \S*python:3\.11", text, re.M)
    assert re.search(r'^ENTRYPOINT \["sortie"\]', text, re.M)
    assert re.search(r"^USER sortie$", text, re.M)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def test_the_compose_installation_runs_as_written(tmp_path: Path) -> None:
    """The compose file's broker config and its auth, scheduler and agent commands, run here
    as written, with only the paths, ports and host names of this machine swapped in."""
    compose = load_yaml(COMPOSE)["services"]
    nats_port, metrics_port, standby_port = free_port(), free_port(), free_port()
    url = f"nats://127.0.0.1:{nats_port}"
    swaps = {
        "/auth": str(tmp_path / "auth"),
        "/var/lib/sortie": str(tmp_path / "var"),
        str(METRICS_PORT): str(metrics_port),
    }
    # the standby's own volume and (in its own container) the same port: apart here
    standby_swaps = {**swaps, "/var/lib/sortie": str(tmp_path / "var-2")}
    standby_swaps[str(METRICS_PORT)] = str(standby_port)

    def here(arg: str, swaps: dict[str, str] = swaps) -> str:
        for old, new in swaps.items():
            arg = arg.replace(old, new)
        return arg

    env = {**os.environ, "SORTIE_URL": url, "SORTIE_PROFILE": str(tmp_path / "none.json")}
    env["PATH"] = f"{Path(SORTIE[0]).parent}{os.pathsep}{env['PATH']}"
    env.pop("SORTIE_CREDS", None)
    # the one-shot auth service
    subprocess.run(
        ["sh", "-c", here(compose["auth"]["command"][0])], env=env, check=True, timeout=60
    )
    # the broker, with compose/nats.conf next to the auth directory, as in the container
    conf = (DEPLOY / "compose" / "nats.conf").read_text()
    conf = conf.replace("0.0.0.0:4222", f"127.0.0.1:{nats_port}")
    conf = conf.replace("127.0.0.1:8222", f"127.0.0.1:{free_port()}")
    conf = conf.replace("store_dir: /data", f"store_dir: {tmp_path / 'nats'}")
    (tmp_path / "nats.conf").write_text(conf)
    with processes() as procs:
        log = (tmp_path / "daemons.log").open("w")
        procs.append(
            subprocess.Popen(
                [nats_server_binary(), "-c", str(tmp_path / "nats.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        deadline = time.monotonic() + 20
        while not port_in_use("127.0.0.1", nats_port):
            assert time.monotonic() < deadline, "the broker did not start"
            time.sleep(0.05)
        client = str(tmp_path / "auth" / "client.creds")

        def start(service: str, swaps: dict[str, str] = swaps) -> None:
            args = [here(a, swaps) for a in compose[service]["command"]]
            procs.append(
                subprocess.Popen(
                    [*SORTIE, *args], env=env, stdout=log, stderr=subprocess.STDOUT, text=True
                )
            )

        start("scheduler")

        def status() -> dict[str, Any] | None:
            proc = subprocess.run(
                [*SORTIE, "--creds", client, "status", "--output", "json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            return json.loads(proc.stdout) if proc.returncode == 0 else None

        deadline = time.monotonic() + 60
        while status() is None:  # the first scheduler leads (it answers) before the second
            assert all(p.poll() is None for p in procs), (tmp_path / "daemons.log").read_text()
            assert time.monotonic() < deadline, "the scheduler never answered"
            time.sleep(0.3)
        start("scheduler-2", standby_swaps)
        start("agent")
        deadline = time.monotonic() + 60
        while True:
            got = status()
            roles = [s["role"] for s in got["schedulers"]] if got else []
            if (
                got
                and [(a["agent_id"], a["state"]) for a in got["agents"]] == [("agent-1", "ready")]
                and roles == ["leader", "standby"]
            ):
                break
            assert all(p.poll() is None for p in procs), (tmp_path / "daemons.log").read_text()
            assert time.monotonic() < deadline, f"no ready agent and standby: {got}"
            time.sleep(0.3)
        metrics = scrape_sync(f"http://127.0.0.1:{metrics_port}/metrics")
        assert metrics.value("sortie_agents", target="local", state="ready") == 1
        assert metrics.value("sortie_scheduler_broker_connected") == 1
        assert metrics.value("sortie_scheduler_leader") == 1
        # the standby serves its standing, and nothing of the leader's state
        standby = scrape_sync(f"http://127.0.0.1:{standby_port}/metrics")
        assert standby.value("sortie_scheduler_leader") == 0
        assert standby.value("sortie_scheduler_leader_epoch") == 1
        assert "sortie_agents" not in standby.types
