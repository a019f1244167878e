"""The Helm chart with the real helm 4 binary against the real test kube-apiserver (issue 8).

- install (namespaced mode) -> every permission the operator needs is granted to the chart's
  ServiceAccount (`kubectl auth can-i --as=system:serviceaccount:NS:SA`), and the operator,
  started with the chart's own container command and environment and only that account's
  token, reconciles an example into its children. A recording proxy in front of the API server
  shows every request it sent was allowed and is in tests/chart/operator_permissions.py. Then a
  rule is taken away and the operator's next reconcile fails with 403: a missing permission
  shows up in a test.
- install (cluster-wide mode) -> every permission granted cluster-wide; uninstall.
- upgrade from a "previous" chart version (a copy with version 0.0.9 and an older CRD that lacks
  `spec.cost`) -> the CRD is upgraded (by the chart's pre-upgrade hook, or by the documented
  `kubectl apply --server-side` step with crds.upgrade=false), the operator image follows the
  new appVersion; uninstall keeps the CRD and the DeepSeekV4Deployments.
- upgrade to an older chart -> the CRD hook refuses to downgrade the CRD, naming the fields the
  older schema lacks; `crds.upgrade=false` gets past it and leaves the CRD as it is.

The test server is Kubernetes 1.20, whose CRD schema has no `x-kubernetes-validations` (CEL, from
1.25), so server-side apply of the generated CRD fails there ("field not declared in schema").
The charts installed here are copies whose crds/ holds the generated CRD minus its CEL rules
(`transform_crd_for_1_20`, as the `dsv4_crd` fixture installs it); nothing else differs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from tests.chart.api_recorder import ApiRecorder, Recorded
from tests.chart.chart_support import CRD_FILE, Json, by_kind, copy_chart, one
from tests.chart.operator_permissions import Permission, operator_permissions
from tests.support.cluster import REPO_ROOT, ControlPlane, transform_crd_for_1_20

import dsv4_operator

pytestmark = pytest.mark.e2e

EXAMPLE = REPO_ROOT / "examples" / "flash-4x-h100.yaml"
CRD_NAME = "deepseekv4deployments.dsv4.io"


def _droppable_field() -> str:
    """An optional spec field the example sets (alphabetically first): the old CRD lacks it."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    example = yaml.safe_load(EXAMPLE.read_text())["spec"]
    return str(sorted(set(example) - set(spec.get("required", [])))[0])


OLD_CRD_DROPS = _droppable_field()
"""The spec property the "previous" chart's CRD lacks (`cost` with today's API and example)."""


KUBE_1_20: Final = ">=1.20.0-0"
"""Chart.yaml `kubeVersion` of the copies installed on the 1.20 test server (the chart needs
1.25 for the CRD's CEL rules, which `crd_for_1_20` drops)."""


def crd_for_1_20(crd: Json) -> Json:
    """The generated CRD without CEL rules (the 1.20 test server cannot store them)."""
    out, _ = transform_crd_for_1_20(crd, drop_empty_defaults=False, atomic_list_maps=False)
    return out


def old_crd_for_1_20(crd: Json) -> Json:
    """An "older" CRD: the 1.20 copy without `spec.cost`."""
    out = crd_for_1_20(crd)
    spec = out["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    del spec["properties"][OLD_CRD_DROPS]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def crd_spec_properties(plane: ControlPlane) -> set[str]:
    crd = plane.kubectl_json("get", "crd", CRD_NAME)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return set(schema["properties"]["spec"]["properties"])


def manifest(plane: ControlPlane, release: str, namespace: str) -> list[Json]:
    out = plane.helm("get", "manifest", release, "-n", namespace).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def can_i(plane: ControlPlane, account: str, need: Permission, namespace: str | None) -> bool:
    args = ["auth", "can-i", need.verb, need.kubectl_resource, f"--as={account}"]
    if need.subresource:
        args.append(f"--subresource={need.subresource}")
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    proc = plane.kubectl(*args, check=False)
    return proc.stdout.strip() == "yes"


def denied(
    plane: ControlPlane, account: str, needs: set[Permission], namespaces: list[str]
) -> list[str]:
    """Needs that `kubectl auth can-i --as=account` answers "no" to (in each namespace)."""
    out = []
    for need in sorted(needs):
        where: list[str | None] = [None] if need.scope == "cluster" else list(namespaces)
        out += [
            f"{need.verb} {need.resource} ({ns or 'cluster'})"
            for ns in where
            if not can_i(plane, account, need, ns)
        ]
    return out


def settled_denials(
    plane: ControlPlane, account: str, needs: set[Permission], namespaces: list[str]
) -> list[str]:
    """`denied`, asked again for up to 20 s while it is not empty: the API server's RBAC
    authorizer learns of new (Cluster)Roles and bindings through a watch, a moment after
    `helm install` returns."""
    deadline = time.monotonic() + 20
    while (found := denied(plane, account, needs, namespaces)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def sa_kubeconfig(plane: ControlPlane, path: Path, server: str, namespace: str, sa: str) -> Path:
    """A kubeconfig with only the ServiceAccount's token (TokenRequest), for `server`."""
    token = plane.kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    cluster: Json = {"server": server}
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [
            {"name": "c", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}
        ],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def admin_server_and_ca(plane: ControlPlane) -> tuple[str, str]:
    doc = yaml.safe_load(plane.kubeconfig.read_text())
    cluster = doc["clusters"][0]["cluster"]
    return str(cluster["server"]), str(cluster["certificate-authority"])


@contextmanager
def chart_container(
    deployment: Json, kubeconfig: Path, pod_name: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run the chart's operator container command + env as a local process (no kubelet here)."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSV4_OPERATOR_")}
    downward = {"metadata.name": pod_name, "status.podIP": "127.0.0.1"}  # what kubelet fills in
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            assert path in downward, item
            env[item["name"]] = downward[path]
    env["HOSTNAME"] = pod_name
    env["KUBECONFIG"] = str(kubeconfig)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    argv = [*container["command"], *container.get("args", [])]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def http_ok(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body: bytes = response.read()
            return body.decode()
    except OSError:
        return None


def condition(obj: Json | None, ctype: str) -> Json:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            found: Json = cond
            return found
    return {}


def get_json(plane: ControlPlane, *args: str) -> Json | None:
    proc = plane.kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        return None
    found: Json = json.loads(proc.stdout)
    return found


def wait_or_explain(
    plane: ControlPlane, check: Any, what: str, timeout: float, log: Path, recorder: ApiRecorder
) -> float:
    """`plane.wait_for`, failing with the operator's log and its requests when it times out."""
    try:
        return plane.wait_for(check, what, timeout=timeout)
    except TimeoutError as error:
        requests = "\n".join(summary(recorder.snapshot()))
        raise AssertionError(
            f"{error}\noperator log (tail):\n{log.read_text()[-6000:]}\nrequests:\n{requests}"
        ) from None


def summary(records: list[Recorded]) -> list[str]:
    """Distinct `verb group/resource` of resource requests (with the status when >= 400)."""
    lines = set()
    for r in records:
        if r.group is not None:
            failed = f" -> {r.status}" if r.status >= 400 else ""
            lines.add(f"{r.verb} {r.group or 'core'}/{r.resource}{failed}")
    return sorted(lines)


def test_install_namespaced_operator_reconciles_with_only_the_chart_permissions(
    control_plane: ControlPlane,
    upstream_crds: dict[str, Any],
    dsv4_crd: Any,
    namespace: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plane = control_plane
    watched = f"{namespace}-w"
    plane.kubectl("create", "namespace", watched)
    chart = copy_chart(tmp_path / "chart", crd=crd_for_1_20, kube_version=KUBE_1_20)
    release = namespace
    metrics_port, health_port = free_port(), free_port()
    try:
        plane.helm(
            "install",
            release,
            str(chart),
            "-n",
            namespace,
            "--set",
            f"watchNamespaces[0]={watched}",
            "--set",
            f"metrics.port={metrics_port}",
            "--set",
            f"healthPort={health_port}",
        )
        objects = manifest(plane, release, namespace)
        deployment = one(objects, "Deployment")
        sa = one(objects, "ServiceAccount")["metadata"]["name"]
        account = f"system:serviceaccount:{namespace}:{sa}"
        role = one(objects, "Role")
        assert role["metadata"]["namespace"] == watched
        assert by_kind(objects, "ClusterRole")

        # Every permission the operator's code needs is granted, and only where it should be.
        needs = operator_permissions(clusterwide=False)
        assert settled_denials(plane, account, needs, [watched]) == []
        lws_create = Permission(
            "leaderworkerset.x-k8s.io", "leaderworkersets", "create", "namespace"
        )
        assert not can_i(plane, account, lws_create, namespace)
        for verb, resource in [
            ("delete", "leaderworkersets.leaderworkerset.x-k8s.io"),
            # Secrets: get and create only (the admin Secrets it names), never list or patch.
            ("list", "secrets"),
            ("patch", "secrets"),
            ("list", "pods"),
        ]:
            no = plane.kubectl(
                "auth", "can-i", verb, resource, f"--as={account}", "-n", watched, check=False
            )
            assert no.stdout.strip() == "no", (verb, resource)
        # The chart holds no peering object: the operator creates its own at startup.
        assert get_json(plane, "kopfpeering", "dsv4-operator", "-n", watched) is None

        # The operator, as the chart runs it, with only the ServiceAccount's token.
        server, ca = admin_server_and_ca(plane)
        recorder = ApiRecorder(server, ca)
        url = recorder.start()
        kubeconfig = sa_kubeconfig(plane, tmp_path / "sa.kubeconfig", url, namespace, sa)
        pod = f"{release}-dsv4-operator-7d9f-abcde"
        log = tmp_path / "operator.log"
        example = yaml.safe_load(EXAMPLE.read_text())
        name = example["metadata"]["name"]
        try:
            with chart_container(deployment, kubeconfig, pod, log) as proc:
                plane.apply(example, namespace=watched)

                def reconciled() -> bool:
                    assert proc.poll() is None, log.read_text()[-4000:]
                    lws = get_json(
                        plane, "leaderworkersets.leaderworkerset.x-k8s.io", name, "-n", watched
                    )
                    cr = get_json(plane, "deepseekv4deployments.dsv4.io", name, "-n", watched)
                    return lws is not None and condition(cr, "Planned").get("status") == "True"

                seconds = wait_or_explain(
                    plane, reconciled, f"{name} reconciled", 90, log, recorder
                )
                cr = get_json(plane, "deepseekv4deployments.dsv4.io", name, "-n", watched)
                assert cr is not None
                uid = cr["metadata"]["uid"]
                for kind in (
                    "configmaps",
                    "services",
                    "poddisruptionbudgets.policy",
                    "leaderworkersets.leaderworkerset.x-k8s.io",
                ):
                    items = plane.kubectl_json("get", kind, "-n", watched)["items"]
                    owned = [
                        i
                        for i in items
                        if any(o["uid"] == uid for o in i["metadata"].get("ownerReferences", []))
                    ]
                    assert owned, kind
                health = wait_or_explain(
                    plane,
                    lambda: http_ok(f"http://127.0.0.1:{health_port}/healthz") is not None,
                    "healthz",
                    30,
                    log,
                    recorder,
                )
                metrics = http_ok(f"http://127.0.0.1:{metrics_port}/metrics") or ""
                assert "dsv4_operator_reconciles_total" in metrics

                def announced() -> bool:
                    peers = plane.kubectl_json("get", "kopfpeering", "dsv4-operator", "-n", watched)
                    record = (peers.get("status") or {}).get(pod) or {}
                    return int(record.get("priority", 0)) > 0

                wait_or_explain(plane, announced, "peering record", 30, log, recorder)
                peering = plane.kubectl_json("get", "kopfpeering", "dsv4-operator", "-n", watched)
                labels = peering["metadata"].get("labels") or {}
                assert labels.get("app.kubernetes.io/managed-by") == "dsv4-operator"
                assert f"Created kopf peering object(s): {watched}/dsv4-operator" in (
                    log.read_text()
                )
                allowed_phase = recorder.snapshot()

                # Take one rule away: the next reconcile is refused (403) and reported.
                live_role = plane.kubectl_json(
                    "get", "role", role["metadata"]["name"], "-n", watched
                )
                live_role["rules"] = [
                    r for r in live_role["rules"] if "poddisruptionbudgets" not in r["resources"]
                ]
                plane.kubectl("replace", "-f", "-", stdin=json.dumps(live_role))
                pdb_get = Permission("policy", "poddisruptionbudgets", "get", "namespace")
                plane.wait_for(lambda: not can_i(plane, account, pdb_get, watched), "rule gone")
                second = {**example, "metadata": {"name": f"{name}-2"}}
                plane.apply(second, namespace=watched)

                def refused() -> bool:
                    cr2 = get_json(
                        plane, "deepseekv4deployments.dsv4.io", f"{name}-2", "-n", watched
                    )
                    return any(
                        c.get("reason") == "ApplyFailed"
                        for c in ((cr2 or {}).get("status") or {}).get("conditions") or []
                    )

                wait_or_explain(plane, refused, "second CR: ApplyFailed", 60, log, recorder)
        finally:
            recorder.stop()

        forbidden = [r for r in allowed_phase if r.status == 403]
        assert forbidden == [], log.read_text()[-4000:]
        wanted = {(n.group, n.resource, n.verb) for n in needs}
        unlisted = sorted(
            {
                f"{r.verb} {r.group}/{r.resource}"
                for r in allowed_phase
                if r.group is not None and (r.group, r.resource, r.verb) not in wanted
            }
        )
        assert unlisted == []
        late = recorder.snapshot()[len(allowed_phase) :]
        refused_requests = {(r.group, r.resource, r.verb) for r in late if r.status == 403}
        assert refused_requests == {("policy", "poddisruptionbudgets", "get")}
        with capsys.disabled():
            sys.stdout.write(
                f"\n[chart] operator as {account}: reconciled in {seconds:.1f} s, healthz after "
                f"{health:.1f} s; {len(allowed_phase)} requests, all allowed:\n  "
                + "\n  ".join(summary(allowed_phase))
                + "\n"
            )

        plane.helm("uninstall", release, "-n", namespace)
        for kind, ns in [
            ("deployment", namespace),
            ("serviceaccount", namespace),
            ("role", watched),
            ("rolebinding", watched),
            ("clusterrole", None),
            ("clusterrolebinding", None),
        ]:
            args = ["get", kind, "-l", f"app.kubernetes.io/instance={release}", "-o", "name"]
            left = plane.kubectl(*args, *(["-n", ns] if ns else [])).stdout.strip()
            assert left == "", (kind, left)
        assert get_json(plane, "crd", CRD_NAME) is not None
        kept = get_json(plane, "deepseekv4deployments.dsv4.io", name, "-n", watched)
        assert kept is not None
        # kopf's finalizer (the operator's resync timer needs one) stays after uninstall, so the
        # README says to delete DeepSeekV4Deployments first, or to clear it like this:
        assert "kopf.zalando.org/KopfFinalizerMarker" in kept["metadata"].get("finalizers", [])
        unblock = json.dumps({"metadata": {"finalizers": None}})
        for cr_name in (name, f"{name}-2"):
            plane.kubectl(
                "patch",
                "deepseekv4deployments.dsv4.io",
                cr_name,
                "-n",
                watched,
                "--type=merge",
                "-p",
                unblock,
            )
        plane.kubectl("delete", "deepseekv4deployments.dsv4.io", "--all", "-n", watched, timeout=30)
    finally:
        plane.helm("uninstall", release, "-n", namespace, check=False)
        plane.kubectl("delete", "namespace", watched, "--wait=false", check=False)


def test_install_cluster_wide_grants_every_permission_and_uninstalls(
    control_plane: ControlPlane,
    upstream_crds: dict[str, Any],
    dsv4_crd: Any,
    namespace: str,
    tmp_path: Path,
) -> None:
    plane = control_plane
    chart = copy_chart(tmp_path / "chart", crd=crd_for_1_20, kube_version=KUBE_1_20)
    release = namespace
    try:
        install = ["install", release, str(chart), "-n", namespace]
        extras = ["--set", "metrics.serviceMonitor.enabled=true", "--set", "dashboard.enabled=true"]
        out = plane.helm(*install, *extras).stdout
        # The test server serves monitoring.coreos.com/v1 (upstream_crds): Helm's .Capabilities
        # sees it, so the ServiceMonitor is rendered and accepted.
        monitors = plane.kubectl_json(
            "get", "servicemonitors.monitoring.coreos.com", "-n", namespace
        )
        assert [m["metadata"]["name"] for m in monitors["items"]] == [
            f"{release}-dsv4-operator"[:63]
        ]
        dashboards = plane.kubectl_json(
            "get", "configmaps", "-n", namespace, "-l", "grafana_dashboard=1"
        )
        assert len(dashboards["items"]) == 1
        assert "A ServiceMonitor scrapes it" in out
        assert "kubectl apply --server-side" not in out  # NOTES: the hook upgrades the CRD
        assert "watches all namespaces" in out
        objects = manifest(plane, release, namespace)
        assert by_kind(objects, "Role") == []
        sa = one(objects, "ServiceAccount")["metadata"]["name"]
        account = f"system:serviceaccount:{namespace}:{sa}"
        needs = operator_permissions(clusterwide=True)
        assert settled_denials(plane, account, needs, [namespace, "default"]) == []
        assert by_kind(objects, "ClusterKopfPeering") == []  # the operator creates it
        plane.helm("uninstall", release, "-n", namespace)
        revoked = sorted(needs)[0]
        plane.wait_for(lambda: not can_i(plane, account, revoked, None), "rights revoked", 20)
        assert plane.helm("status", release, "-n", namespace, check=False).returncode != 0
    finally:
        plane.helm("uninstall", release, "-n", namespace, check=False)


@pytest.mark.parametrize("path", ["hook", "kubectl"])
def test_upgrade_from_the_previous_chart_version_upgrades_the_crd(
    control_plane: ControlPlane,
    upstream_crds: dict[str, Any],
    dsv4_crd: Any,
    namespace: str,
    tmp_path: Path,
    path: str,
) -> None:
    plane = control_plane
    previous = copy_chart(
        tmp_path / "prev",
        version="0.0.9",
        app_version="0.0.9",
        crd=old_crd_for_1_20,
        kube_version=KUBE_1_20,
    )
    current = copy_chart(tmp_path / "new", crd=crd_for_1_20, kube_version=KUBE_1_20)
    release = namespace
    # The cluster as the previous version left it: its CRD exactly (replace, so no field of the
    # current CRD survives under another manager); after its install, only Helm owns the CRD's
    # fields, as when `helm install` of 0.0.9 created it from crds/.
    old_crd = yaml.safe_load((previous / "crds" / CRD_FILE.name).read_text())
    plane.kubectl("replace", "-f", "-", stdin=json.dumps(old_crd))
    try:
        plane.helm(
            "install",
            release,
            str(previous),
            "-n",
            namespace,
            "--set",
            f"watchNamespaces[0]={namespace}",
        )
        assert OLD_CRD_DROPS not in crd_spec_properties(plane)
        got = plane.kubectl_json("get", "crd", CRD_NAME, "--show-managed-fields")
        fields = got["metadata"]["managedFields"]
        helm_owned = [f for f in fields if f["manager"] == "helm" and f["operation"] == "Apply"]
        assert helm_owned, fields
        reset = {"metadata": {"managedFields": helm_owned}}
        plane.kubectl("patch", "crd", CRD_NAME, "--type=merge", "-p", json.dumps(reset))
        example = yaml.safe_load(EXAMPLE.read_text())
        name = example["metadata"]["name"]
        # Server-side only (kubectl's client-side check reads an OpenAPI document that lags).
        apply = ["apply", "--server-side", "--validate=false", "-n", namespace, "-f", "-"]
        plane.kubectl(*apply, stdin=json.dumps(example))
        stored = plane.kubectl_json("get", "deepseekv4deployments.dsv4.io", name, "-n", namespace)
        assert OLD_CRD_DROPS not in stored["spec"]  # pruned: the old schema lacks it

        upgrade = ["upgrade", release, str(current), "-n", namespace, "--reset-then-reuse-values"]
        if path == "kubectl":
            # The documented manual step (README, NOTES) when the hook is off.
            upgrade += ["--set", "crds.upgrade=false"]
            plane.kubectl(
                "apply", "--server-side", "--force-conflicts", "-f", str(current / "crds")
            )
        t0 = time.monotonic()
        plane.helm(*upgrade)
        seconds = time.monotonic() - t0
        assert OLD_CRD_DROPS in crd_spec_properties(plane)

        def kept() -> bool:  # the API server swaps in the new schema moments after Established
            plane.kubectl(*apply, stdin=json.dumps(example))
            stored = plane.kubectl_json(
                "get", "deepseekv4deployments.dsv4.io", name, "-n", namespace
            )
            return bool(stored["spec"].get(OLD_CRD_DROPS) == example["spec"][OLD_CRD_DROPS])

        plane.wait_for(kept, f"spec.{OLD_CRD_DROPS} kept under the upgraded CRD", timeout=30)

        history = json.loads(plane.helm("history", release, "-n", namespace, "-o", "json").stdout)
        assert [h["chart"] for h in history] == [
            "dsv4-operator-0.0.9",
            f"dsv4-operator-{dsv4_operator.__version__}",
        ]
        assert history[-1]["status"] == "deployed"
        image = one(manifest(plane, release, namespace), "Deployment")["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        assert image.endswith(f":{dsv4_operator.__version__}")
        # A later upgrade with the hook on still applies the CRD without a field-manager conflict.
        plane.helm(
            "upgrade",
            release,
            str(current),
            "-n",
            namespace,
            "--reset-then-reuse-values",
            "--set",
            "crds.upgrade=true",
        )
        sys.stdout.write(
            f"\n[chart] upgrade 0.0.9 -> {dsv4_operator.__version__} ({path}): {seconds:.1f} s\n"
        )

        plane.helm("uninstall", release, "-n", namespace)
        assert get_json(plane, "crd", CRD_NAME) is not None
        assert get_json(plane, "deepseekv4deployments.dsv4.io", name, "-n", namespace) is not None
    finally:
        plane.helm("uninstall", release, "-n", namespace, check=False)
        current_crd = crd_for_1_20(yaml.safe_load(CRD_FILE.read_text()))
        restore = ["apply", "--server-side", "--force-conflicts", "--field-manager", "dsv4-e2e"]
        plane.kubectl(*restore, "-f", "-", stdin=json.dumps(current_crd))
        plane.wait_crd_established(CRD_NAME)


def _priority(pod: str) -> int:
    """The priority the chart's container command derives from a pod name (same shell code)."""
    script = "printf '%s' \"$1\" | cksum | cut -d ' ' -f 1"
    out = subprocess.run(
        ["/bin/sh", "-c", script, "sh", pod], capture_output=True, text=True, check=True
    )
    return int(out.stdout) % 2147483646 + 1


@pytest.mark.parametrize("joining", ["standby", "preempting"])
def test_two_replicas_one_reconciles_the_other_stands_by(
    control_plane: ControlPlane,
    upstream_crds: dict[str, Any],
    dsv4_crd: Any,
    namespace: str,
    tmp_path: Path,
    joining: str,
) -> None:
    """replicas=2, as in a scale-up from 1: the pods' name-derived priorities differ; the
    lower-priority one stays (standby joins) or becomes (preempting joins) paused while the
    other reconciles (kopf peering), and takes over when the other stops."""
    plane = control_plane
    chart = copy_chart(tmp_path / "chart", crd=crd_for_1_20, kube_version=KUBE_1_20)
    release = namespace
    sets = [f"watchNamespaces[0]={namespace}", "replicas=2", "metrics.enabled=false"]
    try:
        plane.helm("install", release, str(chart), "-n", namespace, *(f"--set={s}" for s in sets))
        objects = manifest(plane, release, namespace)
        deployment = one(objects, "Deployment")
        assert deployment["spec"]["replicas"] == 2
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        container["env"] = [e for e in container["env"] if "LIVENESS" not in e["name"]]
        sa = one(objects, "ServiceAccount")["metadata"]["name"]
        server, ca = admin_server_and_ca(plane)
        kubeconfig = sa_kubeconfig(plane, tmp_path / "sa.kubeconfig", server, namespace, sa)
        doc = yaml.safe_load(kubeconfig.read_text())
        doc["clusters"][0]["cluster"]["certificate-authority"] = ca
        kubeconfig.write_text(yaml.safe_dump(doc))
        high, low = sorted([f"{release[:40]}-a", f"{release[:40]}-b"], key=_priority)[::-1]
        logs = {high: tmp_path / "high.log", low: tmp_path / "low.log"}
        first, second = (high, low) if joining == "standby" else (low, high)
        example = yaml.safe_load(EXAMPLE.read_text())
        name = example["metadata"]["name"]

        def peers() -> set[str]:
            body = get_json(plane, "kopfpeering", "dsv4-operator", "-n", namespace) or {}
            return set((body.get("status") or {}).keys())

        def planned(cr: str) -> bool:
            got = get_json(plane, "deepseekv4deployments.dsv4.io", cr, "-n", namespace)
            return condition(got, "Planned").get("status") == "True"

        with chart_container(deployment, kubeconfig, first, logs[first]) as first_proc:
            plane.wait_for(lambda: first in peers(), "first replica's peering record", 60)
            with chart_container(deployment, kubeconfig, second, logs[second]) as second_proc:
                plane.wait_for(lambda: second in peers(), "second replica's peering record", 60)
                if joining == "preempting":
                    plane.wait_for(
                        lambda: "Pausing operations in favour of" in logs[low].read_text(),
                        "the running replica pauses for the higher-priority one",
                        30,
                    )
                else:  # kopf starts a replica paused; it never resumes while outranked
                    assert "Resuming operations" not in logs[low].read_text()
                resumed = logs[low].read_text().count("Resuming operations")
                plane.apply(example, namespace=namespace)
                plane.wait_for(lambda: planned(name), f"{name} reconciled", 60)
                assert "Creation is processed" in logs[high].read_text()
                assert "Creation is processed" not in logs[low].read_text()
                high_proc = first_proc if high == first else second_proc
                high_proc.terminate()
                high_proc.wait(30)
                plane.wait_for(lambda: high not in peers(), "stopped replica left the peering", 30)
                second_cr = {**example, "metadata": {"name": f"{name}-b"}}
                plane.apply(second_cr, namespace=namespace)
                plane.wait_for(lambda: planned(f"{name}-b"), "the other replica took over", 60)
                assert logs[low].read_text().count("Resuming operations") == resumed + 1
        for cr in (name, f"{name}-b"):
            unblock = json.dumps({"metadata": {"finalizers": None}})
            args = ["patch", "deepseekv4deployments.dsv4.io", cr, "-n", namespace]
            plane.kubectl(*args, "--type=merge", "-p", unblock)
    finally:
        plane.helm("uninstall", release, "-n", namespace, check=False)


@pytest.mark.e2e
def test_the_chart_fails_cleanly_on_a_cluster_without_cel(
    control_plane: ControlPlane, namespace: str
) -> None:
    # The CRD's validation rules need Kubernetes 1.25 (Chart.yaml kubeVersion). Helm 4 installs
    # crds/ before it checks kubeVersion, so on 1.20 the install stops at the CRD, which the
    # server refuses; no release is left behind.
    done = control_plane.helm(
        "install", namespace, str(REPO_ROOT / "charts" / "dsv4-operator"), "-n", namespace,
        check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "x-kubernetes-validations: field not declared in schema" in done.stderr
    listed = control_plane.helm("list", "-n", namespace, "-q").stdout
    assert namespace not in listed.split()


def test_an_older_chart_does_not_downgrade_the_crd_through_the_upgrade_hook(
    control_plane: ControlPlane,
    upstream_crds: dict[str, Any],
    dsv4_crd: Any,
    namespace: str,
    tmp_path: Path,
) -> None:
    """`helm upgrade` with an older chart (a GitOps revert, an old checkout, a second release
    still on the previous version) must not apply its older CRD over the cluster's newer one:
    the API server would drop the fields the old schema lacks from every DeepSeekV4Deployment
    on read, and for good at the next write (a kopf annotation patch is enough). The hook
    refuses, naming the fields; `crds.upgrade=false` leaves the CRD alone."""
    plane = control_plane
    current = copy_chart(tmp_path / "new", crd=crd_for_1_20, kube_version=KUBE_1_20)
    older = copy_chart(
        tmp_path / "old",
        version="0.0.9",
        app_version="0.0.9",
        crd=old_crd_for_1_20,
        kube_version=KUBE_1_20,
    )
    release = namespace
    try:
        plane.helm("install", release, str(current), "-n", namespace)
        assert OLD_CRD_DROPS in crd_spec_properties(plane)
        # Only Helm owns the CRD's fields, as on a cluster where charts alone applied it (the
        # session fixture's own manager would turn the downgrade into a field conflict).
        got = plane.kubectl_json("get", "crd", CRD_NAME, "--show-managed-fields")
        fields = got["metadata"]["managedFields"]
        helm_owned = [f for f in fields if f["manager"] == "helm" and f["operation"] == "Apply"]
        assert helm_owned, fields
        reset = {"metadata": {"managedFields": helm_owned}}
        plane.kubectl("patch", "crd", CRD_NAME, "--type=merge", "-p", json.dumps(reset))
        upgrade = ["upgrade", release, str(older), "-n", namespace, "--reset-then-reuse-values"]
        done = plane.helm(*upgrade, check=False)
        assert done.returncode != 0
        assert f"spec.{OLD_CRD_DROPS}" in done.stderr, done.stderr
        assert "crds.upgrade=false" in done.stderr, done.stderr
        assert OLD_CRD_DROPS in crd_spec_properties(plane)
        # The documented way past it leaves the CRD as it is.
        plane.helm(*upgrade, "--set", "crds.upgrade=false")
        assert OLD_CRD_DROPS in crd_spec_properties(plane)
        # The same chart again still applies through the hook.
        again = ["upgrade", release, str(current), "-n", namespace, "--reset-then-reuse-values"]
        plane.helm(*again, "--set", "crds.upgrade=true")
        assert OLD_CRD_DROPS in crd_spec_properties(plane)
    finally:
        plane.helm("uninstall", release, "-n", namespace, check=False)
        current_crd = crd_for_1_20(yaml.safe_load(CRD_FILE.read_text()))
        restore = ["apply", "--server-side", "--force-conflicts", "--field-manager", "dsv4-e2e"]
        plane.kubectl(*restore, "-f", "-", stdin=json.dumps(current_crd))
        plane.wait_crd_established(CRD_NAME)


def test_the_upgrade_hook_ignores_properties_our_crd_keeps_as_unknown_fields(
    control_plane: ControlPlane,
    upstream_crds: dict[str, Any],
    dsv4_crd: Any,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Where our CRD keeps unknown fields (`spec.gpu.affinity`: preserve-unknown, no
    properties), a cluster CRD that spells that node's properties out loses nothing when ours
    is applied: the API server keeps every field under it. The hook must not call that a
    downgrade (the operator's own `api.crd.schema_gaps` does not)."""
    plane = control_plane

    def spelled_out(crd: Json) -> Json:
        out = crd_for_1_20(crd)
        spec = out["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        affinity = spec["properties"]["gpu"]["properties"]["affinity"]
        assert affinity.get("x-kubernetes-preserve-unknown-fields") is True
        assert "properties" not in affinity
        affinity.pop("x-kubernetes-preserve-unknown-fields")
        affinity["properties"] = {
            "nodeAffinity": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        }
        return out

    spelled = copy_chart(tmp_path / "spelled", crd=spelled_out, kube_version=KUBE_1_20)
    current = copy_chart(tmp_path / "current", crd=crd_for_1_20, kube_version=KUBE_1_20)
    release = namespace
    try:
        plane.helm("install", release, str(current), "-n", namespace)
        # Only Helm owns the CRD's fields (as in the downgrade test above).
        got = plane.kubectl_json("get", "crd", CRD_NAME, "--show-managed-fields")
        fields = got["metadata"]["managedFields"]
        helm_owned = [f for f in fields if f["manager"] == "helm" and f["operation"] == "Apply"]
        reset = {"metadata": {"managedFields": helm_owned}}
        plane.kubectl("patch", "crd", CRD_NAME, "--type=merge", "-p", json.dumps(reset))
        upgrade = ["upgrade", release, "-n", namespace, "--reset-then-reuse-values"]
        plane.helm(*upgrade[:2], str(spelled), *upgrade[2:])
        live = plane.kubectl_json("get", "crd", CRD_NAME)["spec"]["versions"][0]["schema"]
        gpu = live["openAPIV3Schema"]["properties"]["spec"]["properties"]["gpu"]
        assert "nodeAffinity" in gpu["properties"]["affinity"]["properties"]
        done = plane.helm(*upgrade[:2], str(current), *upgrade[2:], check=False)
        assert done.returncode == 0, done.stderr
    finally:
        plane.helm("uninstall", release, "-n", namespace, check=False)
        current_crd = crd_for_1_20(yaml.safe_load(CRD_FILE.read_text()))
        restore = ["apply", "--server-side", "--force-conflicts", "--field-manager", "dsv4-e2e"]
        plane.kubectl(*restore, "-f", "-", stdin=json.dumps(current_crd))
        plane.wait_crd_established(CRD_NAME)
