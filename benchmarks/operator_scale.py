"""Benchmark: the operator reconciling many DeepSeekV4Deployments on the real local control plane.

    .venv/bin/python benchmarks/operator_scale.py [--count 200] [--resync-seconds 10]

Starts kube-apiserver + etcd + kube-controller-manager (hack/cluster.sh, built by `make cluster`),
installs the generated CRD and the upstream LeaderWorkerSet CRD (transformed for 1.20 as in the
e2e tests), runs `dsv4 operator run` as a child process, creates COUNT resources (the examples in
turn, renamed), and prints:

- time until every resource is reconciled (status.observedGeneration = generation, Planned=True,
  LeaderWorkerSet present), and per resource (create -> reconciled) p50/p99;
- the operator's RSS (VmRSS) after that;
- API writes during a no-op resync: successful POST/PUT/PATCH on our resources counted by the
  apiserver itself (`apiserver_request_total`, every client), and by the operator's own counter,
  over two resync intervals in which every resource is reconciled again (goal: 0);
- API writes when the operator restarts (kopf's resume handlers), for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.support.cluster import (  # noqa: E402  (needs the repo root on sys.path)
    ControlPlane,
    missing_binaries,
)
from tests.support.operator_e2e import (  # noqa: E402
    Cluster,
    apiserver_write_counts,
    crds_for_local_plane,
    operator_env,
    operator_process,
)

OUR_RESOURCES = {
    "deepseekv4deployments",
    "leaderworkersets",
    "configmaps",
    "services",
    "poddisruptionbudgets",
}
"""Writes on these are counted by the apiserver; Events are attributed by their involved object
(the controller-manager's disruption controller posts NoPods Events on every PDB: no pods run)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _install_crds(plane: ControlPlane) -> None:
    crds = crds_for_local_plane()
    plane.apply(*crds)
    plane.wait_crd_established(*(c["metadata"]["name"] for c in crds))


def _bodies(count: int) -> list[dict[str, Any]]:
    examples = [
        yaml.safe_load(p.read_text()) for p in sorted((REPO_ROOT / "examples").glob("*.yaml"))
    ]
    out = []
    for i in range(count):
        body = json.loads(json.dumps(examples[i % len(examples)]))
        body["metadata"] = {"name": f"{body['metadata']['name']}-{i:04d}"}
        out.append(body)
    return out


def _reconciled(item: dict[str, Any]) -> bool:
    status = item.get("status") or {}
    if status.get("observedGeneration") != item["metadata"].get("generation"):
        return False
    return any(
        c.get("type") == "Planned" and c.get("status") in {"True", "False"}
        for c in status.get("conditions") or []
    )


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, seconds (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _operator_counters(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {"writes": 0.0, "reconciles": 0.0}
    for line in text.splitlines():
        if line.startswith("dsv4_operator_api_writes_total{"):
            out["writes"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("dsv4_operator_reconciles_total{"):
            out["reconciles"] += float(line.rsplit(" ", 1)[1])
    return out


def _wait_reconciles(port: int, at_least: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = _operator_counters(port)["reconciles"]
        except OSError:
            got = 0.0
        if got >= at_least:
            return got
        time.sleep(0.5)
    raise TimeoutError(f"{got:.0f} < {at_least} reconciles after {timeout} s")


def _writes(plane: ControlPlane) -> int:
    return sum(apiserver_write_counts(plane, OUR_RESOURCES).values())


def _event_counts(cluster: Cluster, namespace: str) -> dict[tuple[str, str], int]:
    """Event occurrences (the `count` field) by (involved kind, reason)."""
    out: dict[tuple[str, str], int] = {}
    for event in cluster.objects("v1", "events", namespace):
        key = (event["involvedObject"].get("kind", ""), event.get("reason", ""))
        out[key] = out.get(key, 0) + int(event.get("count") or 1)
    return out


def _write_diff(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--resync-seconds", type=float, default=10.0)
    args = parser.parse_args()
    if missing := missing_binaries():
        print(f"control-plane binaries missing: {missing} (run: make cluster)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="dsv4-bench-") as tmp:
        plane = ControlPlane.start(Path(tmp) / "plane")
        try:
            return _run(plane, args.count, args.resync_seconds, Path(tmp) / "operator.log")
        finally:
            plane.stop()


def _rollout(cluster: Cluster, namespace: str, bodies: list[dict[str, Any]], pid: int) -> bool:
    """Create every resource, wait until each is reconciled, print the figures."""
    count = len(bodies)
    created: dict[str, float] = {}
    done: dict[str, float] = {}
    t0 = time.monotonic()
    for body in bodies:
        cluster.custom.create_namespaced_custom_object(
            "dsv4.io", "v1alpha1", namespace, "deepseekv4deployments", body
        )
        created[body["metadata"]["name"]] = time.monotonic()
    t_created = time.monotonic() - t0
    while len(done) < count:
        items = cluster.objects("dsv4.io/v1alpha1", "deepseekv4deployments", namespace)
        now = time.monotonic()
        for item in items:
            name = item["metadata"]["name"]
            if name not in done and _reconciled(item):
                done[name] = now
        if now - t0 > 600:
            print(f"timeout: {len(done)}/{count} reconciled", file=sys.stderr)
            return False
        time.sleep(0.25)
    total = max(done.values()) - t0
    lws = cluster.objects("leaderworkerset.x-k8s.io/v1", "leaderworkersets", namespace)
    latencies = sorted(done[n] - created[n] for n in done)
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * len(latencies)) - 1)]
    print(f"created {count} in {t_created:.1f} s; all reconciled after {total:.1f} s")
    print(f"per resource create -> reconciled: p50 {p50:.2f} s, p99 {p99:.2f} s")
    print(f"LeaderWorkerSets: {len(lws)}")
    print(f"operator RSS after reconciling: {_rss_bytes(pid) / 2**20:.0f} MiB")
    print(f"operator CPU time so far: {_cpu_seconds(pid):.1f} s (2 cores shared with the plane)")
    return True


def _noop_resync(
    plane: ControlPlane, cluster: Cluster, namespace: str, port: int, count: int, resync: float
) -> None:
    """Wait for quiet, then count every write over two resync intervals."""
    # One full resync round must have run, and the apiserver must be quiet (kopf's bookkeeping
    # and Event posting of the creation burst drain after the status is set).
    t_settle = time.monotonic()
    _wait_reconciles(port, 2 * count, 10 * resync + 120)
    quiet = _writes(plane)
    while True:
        time.sleep(3)
        now_writes = _writes(plane)
        if now_writes == quiet:
            break
        quiet = now_writes
    print(
        f"settled (a resync round done, apiserver quiet) after {time.monotonic() - t_settle:.1f} s"
    )
    detail = apiserver_write_counts(plane, OUR_RESOURCES)
    events = _event_counts(cluster, namespace)
    before = (_writes(plane), _operator_counters(port))
    time.sleep(2 * resync)
    after = (_writes(plane), _operator_counters(port))
    changed = _write_diff(detail, apiserver_write_counts(plane, OUR_RESOURCES))
    new_events = {
        f"{kind}/{reason}": n - events.get((kind, reason), 0)
        for (kind, reason), n in _event_counts(cluster, namespace).items()
        if n != events.get((kind, reason), 0)
    }
    ours = sum(n for key, n in new_events.items() if key.startswith("DeepSeekV4Deployment/"))
    resyncs = after[1]["reconciles"] - before[1]["reconciles"]
    print(
        f"no-op resync ({resyncs:.0f} reconciles over {2 * resync:.0f} s): API writes "
        f"{after[0] - before[0]} (apiserver count, all clients, on DeepSeekV4Deployments, LWS, "
        "ConfigMaps, Services, PDBs"
        f"{': ' + json.dumps(changed) if changed else ''}), "
        f"{after[1]['writes'] - before[1]['writes']:.0f} (operator's own counter)"
    )
    print(
        f"  Events in the window by involved kind/reason: {json.dumps(new_events)}; "
        f"on DeepSeekV4Deployments (the operator's): {ours}"
    )


def _operator_events(cluster: Cluster, namespace: str) -> int:
    counts = _event_counts(cluster, namespace)
    return sum(n for (kind, _), n in counts.items() if kind == "DeepSeekV4Deployment")


def _run(plane: ControlPlane, count: int, resync: float, log: Path) -> int:
    _install_crds(plane)
    namespace = "bench"
    plane.kubectl("create", "namespace", namespace)
    port = _free_port()
    env = operator_env(
        plane.kubeconfig, resync_seconds=resync, metrics_port=port, runtime_image="bench"
    )
    api = plane.api_client()
    cluster = Cluster(api)
    print(f"control plane up in {plane.startup_seconds:.1f} s; {count} DeepSeekV4Deployments")
    with operator_process(env, "--namespace", namespace, log=log) as proc:
        _wait_reconciles(port, 0, 60)
        if not _rollout(cluster, namespace, _bodies(count), proc.pid):
            return 1
        _noop_resync(plane, cluster, namespace, port, count, resync)
        print(f"operator RSS after resyncs: {_rss_bytes(proc.pid) / 2**20:.0f} MiB")
    before_restart = (_writes(plane), _operator_events(cluster, namespace))
    with operator_process(env, "--namespace", namespace, log=log):
        _wait_reconciles(port, count, 120)
        time.sleep(3)
        print(
            f"operator restart (kopf resume of {count}): API writes "
            f"{_writes(plane) - before_restart[0]} (apiserver count, our resources) + "
            f"{_operator_events(cluster, namespace) - before_restart[1]} Events on "
            "DeepSeekV4Deployments"
        )
    api.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
