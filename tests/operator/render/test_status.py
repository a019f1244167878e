"""The desired status: conditions per situation, stable transition times, minimal patches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.operator.render.conftest import Case

from dsv4_operator.api import (
    DeepSeekV4DeploymentSpec,
    DeepSeekV4DeploymentStatus,
    InvalidSpecError,
    parse_spec,
)
from dsv4_operator.planning import Plan, plan
from dsv4_operator.planning.from_spec import request_from_spec, spec_words
from dsv4_operator.render import Observation, Owner, desired_status, status_patch
from dsv4_operator.render.status import plan_status

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
OWNER = Owner("d", "ns", "uid", generation=4)


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def _obs(case: Case, lws: dict[str, Any] | None = None, **kw: Any) -> Observation:
    return Observation(
        case.owner, spec=case.spec, plan=case.plan, lws_status=lws, endpoint="http://e/v1", **kw
    )


def test_rolling_out_then_ready(case: Case) -> None:
    want = case.spec.replicas
    first = desired_status(_obs(case), None, T0)
    keda = case.spec.autoscaling.enabled and case.spec.autoscaling.mode == "keda"
    assert _conditions(first) == {
        "Ready": ("False", "ReplicasNotReady"),
        "Planned": ("True", "PlanReady"),
        "Progressing": ("True", "RollingOut"),
        "Available": ("False", "NoReplicaReady" if want else "ScaledToZero"),
        "Degraded": ("False", "AsExpected"),
        # No ScaledObject read yet: nothing has confirmed that KEDA scales (h36).
        **({"ScalingActive": ("Unknown", "AwaitingKEDA")} if keda else {}),
    }
    assert first["observedGeneration"] == case.owner.generation
    assert first["plan"]["gpuType"] == case.plan.chosen.gpu.name
    DeepSeekV4DeploymentStatus.model_validate(first)
    up = {"replicas": want, "readyReplicas": want, "updatedReplicas": want}
    ready = desired_status(_obs(case, up), first, T0 + timedelta(seconds=30))
    assert _conditions(ready)["Ready"] == ("True", "AllReplicasReady")
    assert _conditions(ready)["Progressing"] == ("False", "RolloutComplete")
    assert (ready["replicas"], ready["readyReplicas"]) == (want, want)
    assert first["selector"] == (
        f"app.kubernetes.io/instance={case.owner.name},app.kubernetes.io/name=deepseek-v4,"
        f"dsv4.io/deployment={case.owner.name},dsv4.io/role=leader"
    )
    lws_selector = {**up, "hpaPodSelector": "leaderworkerset.sigs.k8s.io/name=x"}
    assert desired_status(_obs(case, lws_selector), ready, T0)["selector"] == (
        "leaderworkerset.sigs.k8s.io/name=x"
    )
    by_type = {c["type"]: c for c in ready["conditions"]}
    assert by_type["Planned"]["lastTransitionTime"] == "2026-11-29T12:00:00Z"  # unchanged status
    assert by_type["Ready"]["lastTransitionTime"] == "2026-11-29T12:00:30Z"  # flipped
    # The same observation again changes nothing: nothing to write.
    again = desired_status(_obs(case, up), ready, T0 + timedelta(seconds=90))
    assert status_patch(again, ready) == {}
    DeepSeekV4DeploymentStatus.model_validate(ready)


def test_degraded_when_a_rolled_out_replica_is_not_ready(case: Case) -> None:
    if case.spec.replicas == 0:
        pytest.skip("no replica to lose with spec.replicas 0")
    want = case.spec.replicas
    lost = {"replicas": want, "readyReplicas": want - 1, "updatedReplicas": want}
    # Review finding: an updated group still loading its weights (minutes for V4) made every
    # start, scale-up and rollout Degraded. Within the startup budget since every group runs
    # the current template (the reconciler remembers when), it is starting ...
    status = desired_status(_obs(case, lost, starting_since=T0), None, T0)
    assert _conditions(status)["Degraded"] == ("False", "ReplicasStarting")
    assert _conditions(status)["Ready"] == ("False", "ReplicasNotReady")
    # ... past it, it is degraded.
    later = T0 + timedelta(seconds=case.plan.startup_budget_seconds + 1)
    status = desired_status(_obs(case, lost, starting_since=T0), status, later)
    assert _conditions(status)["Degraded"] == ("True", "ReplicasUnavailable")
    assert _conditions(status)["Ready"] == ("False", "ReplicasNotReady")


def test_invalid_spec_keeps_the_rest_of_the_status(case: Case) -> None:
    good = desired_status(_obs(case), None, T0)
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec({"model": "flash", "gpu": {"types": ["h100-80gb"], "gpusPerNode": 99}})
    obs = Observation(OWNER, error_reason="InvalidSpec", error_message=str(caught.value))
    bad = desired_status(obs, good, T0)
    assert set(bad) == {"observedGeneration", "conditions"}
    conditions = {c["type"]: c for c in bad["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == (
        "False",
        "InvalidSpec",
    )
    assert "spec.gpu.gpusPerNode" in conditions["Ready"]["message"]
    assert conditions["Planned"]["reason"] == "InvalidSpec"
    assert (
        conditions["Available"] == {c["type"]: c for c in good["conditions"]}["Available"]
    )  # left as it was
    patch = status_patch(bad, good)
    assert "conditions" in patch
    assert set(patch) <= {"observedGeneration", "conditions"}


def test_lws_missing_and_paused(case: Case) -> None:
    missing = desired_status(_obs(case, lws_api=False), None, T0)
    assert _conditions(missing)["Degraded"] == ("True", "LeaderWorkerSetMissing")
    assert _conditions(missing)["Ready"] == ("False", "LeaderWorkerSetMissing")
    paused = desired_status(Observation(case.owner, spec=case.spec, paused=True), missing, T0)
    assert _conditions(paused)["Progressing"] == ("False", "Paused")
    assert "plan" not in paused


def test_other_owners_conditions_are_kept(case: Case) -> None:
    scaling = {
        "type": "ScalingActive",
        "status": "True",
        "reason": "TokenRate",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    status = desired_status(_obs(case), {"conditions": [scaling]}, T0)
    mode = case.spec.autoscaling.active_mode
    if mode in {"keda", "hpa"}:
        # Under mode keda/hpa the reconciler owns ScalingActive (what the scaler reports).
        # (no scaler read here: awaiting its controller's conditions)
        assert (
            status["conditions"][-1]["reason"]
            == {
                "keda": "AwaitingKEDA",
                "hpa": "AwaitingHPA",
            }[mode]
        )
    elif mode == "native":
        assert status["conditions"][-1] == scaling  # the native autoscaler's own
    else:  # autoscaling disabled: nothing scales, so a ScalingActive left over is removed
        assert "ScalingActive" not in _conditions(status)
    assert [c["type"] for c in status["conditions"]][:5] == [
        "Ready",
        "Planned",
        "Progressing",
        "Available",
        "Degraded",
    ]


def test_cost_from_prices(case: Case) -> None:
    status = desired_status(_obs(case), None, T0)
    gpus = case.plan.chosen.layout.gpus * case.spec.replicas
    assert status["cost"]["gpuHoursPerDay"] == gpus * 24
    price = case.spec.cost.micro_usd_per_gpu_hour(case.plan.chosen.gpu.name)
    if price is None:
        assert "usdPerHour" not in status["cost"]
    else:
        assert float(status["cost"]["usdPerHour"]) == pytest.approx(price * gpus / 1e6, abs=1e-4)


def test_observation_without_plan_is_refused() -> None:
    with pytest.raises(ValueError, match="needs spec and plan"):
        desired_status(Observation(OWNER), None, T0)


def test_keda_missing_is_reported_on_scaling_active() -> None:
    spec = parse_spec(
        {
            "model": "flash",
            "gpu": {"types": ["h200-141gb"]},
            "autoscaling": {"enabled": True, "mode": "keda", "maxReplicas": 3},
        }
    )
    planned = plan(request_from_spec(spec))
    missing = desired_status(Observation(OWNER, spec=spec, plan=planned, keda_api=False), None, T0)
    scaling = {c["type"]: c for c in missing["conditions"]}["ScalingActive"]
    assert (scaling["status"], scaling["reason"]) == ("False", "KEDAMissing")
    assert "install KEDA" in scaling["message"]
    served = desired_status(Observation(OWNER, spec=spec, plan=planned), missing, T0)
    assert _conditions(served)["ScalingActive"] == ("Unknown", "AwaitingKEDA")
    # Leaving mode keda drops our condition (the native autoscaler would write its own).
    off = parse_spec({"model": "flash", "gpu": {"types": ["h200-141gb"]}})
    left = desired_status(Observation(OWNER, spec=off, plan=planned, keda_api=False), missing, T0)
    assert "ScalingActive" not in _conditions(left)


def test_rejected_lists_only_types_that_never_fit_with_their_closest_layout() -> None:
    raw: dict[str, Any] = {
        "model": "flash",
        "gpu": {"types": ["rtx-4090-24gb", "h200-141gb", "h100-80gb"], "maxNodes": 1},
    }
    spec = parse_spec(raw)
    planned = plan(request_from_spec(spec))
    assert "h100-80gb" in planned.feasible_gpu_types  # it fits; it just is not chosen
    rejected = plan_status(spec, planned)["rejected"]
    assert [r["gpuType"] for r in rejected] == ["rtx-4090-24gb"]
    largest = max(r.layout.gpus for r in planned.rejected if r.gpu == "rtx-4090-24gb")
    closest = next(
        r for r in planned.rejected if r.gpu == "rtx-4090-24gb" and r.layout.gpus == largest
    )
    # In spec fields (h13), as the resource's status speaks.
    assert rejected[0]["reason"] == closest.reasons[0].worded(spec_words)[:1024]
    assert "spec.gpuMemoryUtilizationPercent" in rejected[0]["reason"]


def test_the_closest_rejection_prefers_a_kv_shortfall_to_weights_that_do_not_fit() -> None:
    from dsv4_operator.planning import Code, Finding, Rejection
    from dsv4_operator.planning.memory import Layout
    from dsv4_operator.render.status import _nearness

    def rejection(tp: int, dp: int, code: Code) -> Rejection:
        layout = Layout(1, 8 if tp * dp == 8 else tp * dp, tp, dp, True, 1)
        return Rejection("h200-141gb", layout, (Finding(code, code.value),))

    weights_8 = rejection(1, 8, Code.WEIGHTS_EXCEED_BUDGET)
    kv_8 = rejection(4, 2, Code.MAX_MODEL_LEN_EXCEEDS_KV_POOL)
    rule_8 = rejection(8, 1, Code.TP_NOT_DIVIDING_HEADS)
    kv_4 = rejection(4, 1, Code.MAX_MODEL_LEN_EXCEEDS_KV_POOL)
    ranked = sorted([weights_8, kv_4, rule_8, kv_8], key=_nearness, reverse=True)
    assert ranked == [kv_8, weights_8, rule_8, kv_4]


def test_a_finished_canary_is_ready(case: Case) -> None:
    """Review finding: with rollout.partition the groups below it keep the old template, which
    LWS counts as not updated, so a finished canary never became Ready (and the progress timer
    re-reconciled it forever)."""
    from dsv4_operator.api.v1alpha1.scaling import Rollout

    spec = case.spec.model_copy(
        update={"replicas": 3, "rollout": Rollout(partition=2, max_surge=1)}
    )
    obs = Observation(case.owner, spec=spec, plan=case.plan, endpoint="http://e/v1")
    # Counts as LWS makes them: every leader, the surge group (index 3, new template) included.
    midway = {"replicas": 4, "readyReplicas": 3, "updatedReplicas": 1}  # surge group loading
    status = desired_status(replace(obs, lws_status=midway), None, T0)
    assert _conditions(status)["Progressing"] == ("True", "RollingOut")
    # Review finding: the ready surge group counted as one of the spec's: Ready mid-rollout.
    surge_ready = {"replicas": 4, "readyReplicas": 4, "updatedReplicas": 1}  # group 2 untouched
    status = desired_status(replace(obs, lws_status=surge_ready), status, T0)
    assert _conditions(status)["Ready"] == ("False", "ReplicasNotReady")
    done = {"replicas": 4, "readyReplicas": 4, "updatedReplicas": 2}  # LWS keeps the surge
    status = desired_status(replace(obs, lws_status=done), status, T0)
    assert _conditions(status)["Ready"] == ("True", "AllReplicasReady")
    assert _conditions(status)["Progressing"] == ("False", "RolloutComplete")
    message = next(c["message"] for c in status["conditions"] if c["type"] == "Ready")
    assert "rollout.partition 2: groups 0-1 keep the previous template" in message


def test_counts_the_lws_controller_has_not_made_for_the_current_spec_are_not_ready(
    case: Case,
) -> None:
    """Review finding: one reconcile after a template change, the old revision's counts read
    as a finished rollout (LWS reports status.observedGeneration, which was ignored)."""
    want = max(case.spec.replicas, 1)
    spec = case.spec.model_copy(update={"replicas": want})
    old_counts = {"replicas": want, "readyReplicas": want, "updatedReplicas": want}
    obs = Observation(
        case.owner, spec=spec, plan=case.plan, lws_status=old_counts, lws_changed=True
    )
    status = desired_status(obs, None, T0)
    assert _conditions(status)["Ready"] == ("False", "ReplicasNotReady")


def test_surge_groups_are_not_counted_as_the_specs_groups(case: Case) -> None:
    """Review finding: LWS counts surge groups (new template) in replicas, readyReplicas and
    updatedReplicas, so 2 replicas + 1 ready surge group read as a finished rollout while
    group 0 was still on the old template."""
    from dsv4_operator.api.v1alpha1.scaling import Rollout

    spec = case.spec.model_copy(
        update={"replicas": 2, "rollout": Rollout(max_surge=1, max_unavailable=0)}
    )
    obs = Observation(case.owner, spec=spec, plan=case.plan, endpoint="http://e/v1")
    midway = {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 2}
    status = desired_status(replace(obs, lws_status=midway), None, T0)
    assert _conditions(status)["Ready"] == ("False", "ReplicasNotReady")
    assert _conditions(status)["Progressing"] == ("True", "RollingOut")
    assert _conditions(status)["Degraded"] == ("False", "AsExpected")
    done = {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}
    status = desired_status(replace(obs, lws_status=done), status, T0)
    assert _conditions(status)["Ready"] == ("True", "AllReplicasReady")


def test_a_ready_surge_group_serves_so_the_resource_is_available(case: Case) -> None:
    """Final review: during a surge rollout of 1 replica, the old group (ready) plus a loading
    surge group read as 0 ready after the surge was subtracted, so Available went False."""
    from dsv4_operator.api.v1alpha1.scaling import Rollout

    spec = case.spec.model_copy(
        update={"replicas": 1, "rollout": Rollout(max_surge=1, max_unavailable=0)}
    )
    lws = {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 1}
    obs = Observation(case.owner, spec=spec, plan=case.plan, lws_status=lws)
    status = desired_status(obs, None, T0)
    assert _conditions(status)["Available"] == ("True", "MinimumReplicasAvailable")
    assert _conditions(status)["Ready"] == ("False", "ReplicasNotReady")
    assert (status["replicas"], status["readyReplicas"]) == (1, 1)  # the scale subresource's


def test_a_changed_mapping_removes_the_keys_it_no_longer_has() -> None:
    """New-user trial: switching to an unpriced GPU type kept `status.cost.usdPerHour` at the
    old type's price: a merge patch keeps keys the new value leaves out."""
    current = {"cost": {"gpuHoursPerDay": 96, "usdPerHour": "9.96"}, "replicas": 1}
    desired = {"cost": {"gpuHoursPerDay": 96}, "replicas": 1}
    assert status_patch(desired, current) == {"cost": {"gpuHoursPerDay": 96, "usdPerHour": None}}
    nested = {"plan": {"layout": {"tp": 8, "ep": 8}, "gpu": "h100"}}
    assert status_patch({"plan": {"layout": {"tp": 8}, "gpu": "h100"}}, nested) == {
        "plan": {"layout": {"tp": 8, "ep": None}, "gpu": "h100"}
    }
    assert status_patch(current, current) == {}


def test_cost_per_million_tokens_counts_the_replicas_the_load_takes() -> None:
    """New-user trial: an autoscaled resource at 1 replica divided that replica's cost by the
    load that its own per-replica target serves with 4, quoting $ per million tokens 4x low."""
    import yaml
    from tests.support.cluster import REPO_ROOT

    body = yaml.safe_load((REPO_ROOT / "examples" / "flash-autoscaled.yaml").read_text())
    body["spec"]["cost"] = {"gpuHourlyPrices": [
        {"gpuType": "h200-141gb", "usdPerGpuHour": "3.00"},
        {"gpuType": "h100-80gb", "usdPerGpuHour": "2.50"},
    ]}  # fmt: skip
    spec = parse_spec(body["spec"])
    planned = plan(request_from_spec(spec))
    owner = Owner("flash-autoscaled", "ns", "uid")
    status = desired_status(Observation(owner, spec=spec, plan=planned), None, T0)
    cost, gpus = status["cost"], planned.chosen.layout.gpus
    price = {"h200-141gb": 3, "h100-80gb": 2.5}[planned.chosen.gpu.name]
    assert spec.replicas == 1
    assert float(cost["usdPerHour"]) == pytest.approx(price * gpus)  # what runs now
    # 20,000 tok/s at the 5,000 per replica the autoscaler aims at: 4 replicas
    per_million = price * gpus * 4 / (20_000 * 3600 / 1e6)
    assert float(cost["usdPerMillionTokens"]) == pytest.approx(per_million, abs=1e-4)


def test_a_held_template_says_serving_when_only_a_surge_group_is_ready() -> None:
    """Diff review: "keep serving" counted the spec's groups only, so a resource whose one
    serving group was the surge group was said to serve nothing (and each flip of the wording
    posted a new Warning)."""
    spec = parse_spec({"model": "flash", "gpu": {"types": ["h200-141gb"]}, "replicas": 1})
    planned = plan(request_from_spec(spec))
    lws = {"replicas": 2, "readyReplicas": 1, "updatedReplicas": 1}
    obs = Observation(
        Owner("d", "ns", "uid"),
        spec=spec,
        plan=planned,
        lws_status=lws,
        missing=("Secret x (spec.engine.env X) does not exist",),
        lws_held=True,
    )
    ready = next(c for c in desired_status(obs, None, T0)["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ReferenceMissing"
    assert ready["message"].endswith("(its ready groups keep serving)")


def _scaling_spec(mode: str) -> tuple[DeepSeekV4DeploymentSpec, Plan]:
    spec = parse_spec(
        {
            "model": "flash",
            "gpu": {"types": ["h200-141gb"]},
            "autoscaling": {"enabled": True, "mode": mode, "maxReplicas": 3},
        }
    )
    return spec, plan(request_from_spec(spec))


def _scaler(kind: str, *conditions: tuple[str, str, str, str]) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": "flash-x"},
        "status": {
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions
            ]
        },
    }


def _scaling(status: Mapping[str, Any]) -> dict[str, Any]:
    return dict({c["type"]: c for c in status["conditions"]}["ScalingActive"])


def test_hpa_failure_is_repeated_on_scaling_active() -> None:
    """The HPA controller's ScalingActive=False (no external metrics API) reaches our status."""
    spec, planned = _scaling_spec("hpa")
    fresh = desired_status(Observation(OWNER, spec=spec, plan=planned, scaler=None), None, T0)
    assert _conditions(fresh)["ScalingActive"] == ("Unknown", "AwaitingHPA")
    failing = _scaler(
        "HorizontalPodAutoscaler",
        ("AbleToScale", "True", "SucceededGetScale", "the HPA controller was able to get..."),
        (
            "ScalingActive",
            "False",
            "FailedGetExternalMetric",
            "the HPA was unable to compute the replica count: unable to get external metric",
        ),
    )
    status = desired_status(Observation(OWNER, spec=spec, plan=planned, scaler=failing), fresh, T0)
    got = _scaling(status)
    assert (got["status"], got["reason"]) == ("False", "HPANotScaling")
    assert got["message"].startswith(
        "the HorizontalPodAutoscaler flash-x reports ScalingActive=False "
        "(FailedGetExternalMetric): the HPA was unable to compute the replica count"
    )
    assert "prometheus-adapter must serve dsv4_generation_tokens_per_second" in got["message"]
    cannot = _scaler(
        "HorizontalPodAutoscaler",
        ("AbleToScale", "False", "FailedUpdateScale", "forbidden"),
        ("ScalingActive", "True", "ValidMetricFound", "ok"),
    )
    got = _scaling(
        desired_status(Observation(OWNER, spec=spec, plan=planned, scaler=cannot), None, T0)
    )
    assert (got["status"], got["reason"]) == ("False", "HPANotScaling")
    assert "AbleToScale=False (FailedUpdateScale): forbidden" in got["message"]
    assert "prometheus-adapter" not in got["message"]
    healthy = _scaler(
        "HorizontalPodAutoscaler",
        ("AbleToScale", "True", "ReadyForNewScale", ""),
        ("ScalingActive", "True", "ValidMetricFound", ""),
    )
    back = desired_status(Observation(OWNER, spec=spec, plan=planned, scaler=healthy), status, T0)
    assert _conditions(back)["ScalingActive"] == ("True", "HPA")


def test_a_scaler_failure_names_the_scaler_as_its_awaited_message_does() -> None:
    """`_reported` read the scaler's name with no fallback ("the ScaledObject  reports"), while
    the awaited message (`_scaler_name`) falls back on the resource's name, as the scaler is
    named; both read it one way now."""
    spec, planned = _scaling_spec("keda")
    nameless = _scaler("ScaledObject", ("Ready", "False", "TriggerError", "not working"))
    del nameless["metadata"]
    got = _scaling(
        desired_status(Observation(OWNER, spec=spec, plan=planned, scaler=nameless), None, T0)
    )
    assert f"the ScaledObject {OWNER.name} reports Ready=False (TriggerError)" in got["message"]


def test_keda_not_ready_is_repeated_on_scaling_active() -> None:
    spec, planned = _scaling_spec("keda")
    trigger_error = _scaler(
        "ScaledObject",
        ("Ready", "False", "TriggerError", "Triggers defined in ScaledObject are not working"),
        ("Active", "False", "ScalerNotActive", ""),
    )
    got = _scaling(
        desired_status(Observation(OWNER, spec=spec, plan=planned, scaler=trigger_error), None, T0)
    )
    assert (got["status"], got["reason"]) == ("False", "KEDANotReady")
    assert "ScaledObject flash-x reports Ready=False (TriggerError)" in got["message"]
    paused = _scaler(
        "ScaledObject",
        ("Ready", "True", "ScaledObjectReady", ""),
        ("Paused", "True", "ScaledObjectPaused", "ScaledObject is paused"),
    )
    got = _scaling(
        desired_status(Observation(OWNER, spec=spec, plan=planned, scaler=paused), None, T0)
    )
    assert (got["status"], got["reason"]) == ("False", "KEDANotReady")
    assert "Paused=True" in got["message"]
    # Ready=Unknown (PartialTriggerError: some triggers still answer, so KEDA sets Active=True
    # beside it, kedacore/keda `pkg/scaling/executor/scale_scaledobjects.go`) still scales.
    partial = _scaler(
        "ScaledObject",
        ("Ready", "Unknown", "PartialTriggerError", ""),
        ("Active", "True", "ScalerActive", ""),
    )
    ok = desired_status(Observation(OWNER, spec=spec, plan=planned, scaler=partial), None, T0)
    assert _conditions(ok)["ScalingActive"] == ("True", "KEDA")


def test_scaling_active_left_by_another_mode_is_removed() -> None:
    """keda/hpa -> native drops ours; -> disabled drops any (the native one too)."""
    spec, planned = _scaling_spec("hpa")
    hpa = desired_status(Observation(OWNER, spec=spec, plan=planned), None, T0)
    native_spec, _ = _scaling_spec("native")
    native = desired_status(Observation(OWNER, spec=native_spec, plan=planned), hpa, T0)
    assert "ScalingActive" not in _conditions(native)
    by_native = {
        "type": "ScalingActive",
        "status": "True",
        "reason": "TokenThroughput",
        "message": "1 of 1 replica groups report metrics",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    kept = desired_status(
        Observation(OWNER, spec=native_spec, plan=planned), {"conditions": [by_native]}, T0
    )
    assert _conditions(kept)["ScalingActive"] == ("True", "TokenThroughput")
    off = parse_spec({"model": "flash", "gpu": {"types": ["h200-141gb"]}})
    gone = desired_status(Observation(OWNER, spec=off, plan=planned), kept, T0)
    assert "ScalingActive" not in _conditions(gone)


@pytest.mark.parametrize(
    ("missing", "verb"),
    [
        (("PersistentVolumeClaim w (spec.modelSource.pvc.claimName) does not exist",), "it exists"),
        (
            (
                "PersistentVolumeClaim w (spec.modelSource.pvc.claimName) does not exist",
                "Secret x (spec.engine.env X) does not exist",
            ),
            "they exist",
        ),
    ],
)
def test_the_missing_reference_message_agrees_with_the_count(
    missing: tuple[str, ...], verb: str
) -> None:
    """h12 (README walk-through): one missing claim read "pods cannot start until they exist"."""
    spec = parse_spec({"model": "flash", "gpu": {"types": ["h200-141gb"]}, "replicas": 1})
    obs = Observation(
        Owner("d", "ns", "uid"), spec=spec, plan=plan(request_from_spec(spec)), missing=missing
    )
    ready = next(c for c in desired_status(obs, None, T0)["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ReferenceMissing"
    assert ready["message"].endswith(f": pods cannot start until {verb}")


def test_keda_scaling_is_unknown_until_keda_reports_the_scaled_object_ready() -> None:
    """h29 N6: in keda mode ScalingActive said True before KEDA had written any condition on
    the ScaledObject (no KEDA operator running, or not yet reconciled): nothing had confirmed
    that anything scales. KEDA first writes Ready, Active, Fallback and Paused as Unknown
    (kedacore/keda `apis/keda/v1alpha1/condition_types.go`, GetInitializedConditions), then
    Ready=True (ScaledObjectReady) or False once its controller has checked the object."""
    spec, planned = _scaling_spec("keda")

    def scaling(scaler: dict[str, Any] | None) -> dict[str, Any]:
        return _scaling(
            desired_status(Observation(OWNER, spec=spec, plan=planned, scaler=scaler), None, T0)
        )

    no_status = {"kind": "ScaledObject", "metadata": {"name": "flash-x"}}
    initialized = _scaler(
        "ScaledObject",
        ("Ready", "Unknown", "", ""),
        ("Active", "Unknown", "", ""),
        ("Fallback", "Unknown", "", ""),
        ("Paused", "Unknown", "", ""),
    )
    for awaiting in (None, no_status, initialized):
        got = scaling(awaiting)
        assert (got["status"], got["reason"]) == ("Unknown", "AwaitingKEDA"), awaiting
        assert "has not reported Ready" in got["message"]
        assert "KEDA operator" in got["message"]
    assert "ScaledObject flash-x " in scaling(initialized)["message"]
    assert f"ScaledObject {OWNER.name} " in scaling(None)["message"]
    ready = _scaler(
        "ScaledObject",
        ("Ready", "True", "ScaledObjectReady", "ScaledObject is defined correctly"),
        ("Active", "False", "ScalerNotActive", "Scaling is not performed"),
        ("Fallback", "False", "NoFallbackFound", ""),
        ("Paused", "Unknown", "", ""),
    )
    assert (scaling(ready)["status"], scaling(ready)["reason"]) == ("True", "KEDA")
    # KEDA's PartialTriggerError: Ready=Unknown while some triggers answer (Active=True).
    partial = _scaler(
        "ScaledObject",
        ("Ready", "Unknown", "PartialTriggerError", "Some triggers are not working"),
        ("Active", "True", "ScalerActive", "Scaling is performed"),
    )
    assert (scaling(partial)["status"], scaling(partial)["reason"]) == ("True", "KEDA")


def test_hpa_scaling_is_unknown_until_the_hpa_controller_reports_scaling_active() -> None:
    """The same for mode hpa: a HorizontalPodAutoscaler without conditions has not been
    synced by kube-controller-manager (every 15 s by default) and has computed nothing; its
    ScalingActive=True (ValidMetricFound) is what says it computes replica counts."""
    spec, planned = _scaling_spec("hpa")

    def scaling(scaler: dict[str, Any] | None) -> dict[str, Any]:
        return _scaling(
            desired_status(Observation(OWNER, spec=spec, plan=planned, scaler=scaler), None, T0)
        )

    fresh = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "flash-x"}, "status": {}}
    able_only = _scaler("HorizontalPodAutoscaler", ("AbleToScale", "True", "SucceededGetScale", ""))
    for awaiting in (None, fresh, able_only):
        got = scaling(awaiting)
        assert (got["status"], got["reason"]) == ("Unknown", "AwaitingHPA"), awaiting
        assert "has not reported ScalingActive" in got["message"]
    healthy = _scaler(
        "HorizontalPodAutoscaler",
        ("AbleToScale", "True", "ReadyForNewScale", ""),
        ("ScalingActive", "True", "ValidMetricFound", ""),
    )
    assert (scaling(healthy)["status"], scaling(healthy)["reason"]) == ("True", "HPA")


def test_awaiting_the_scaler_is_kept_in_its_mode() -> None:
    """Unknown is ours too in keda/hpa mode: kept, and written once (the reconciler posts no
    Warning for it: tests/operator/handlers/test_reconciler.py)."""
    for mode, reason in (("keda", "AwaitingKEDA"), ("hpa", "AwaitingHPA")):
        spec, planned = _scaling_spec(mode)
        first = desired_status(Observation(OWNER, spec=spec, plan=planned), None, T0)
        assert _conditions(first)["ScalingActive"] == ("Unknown", reason)
        later = T0 + timedelta(seconds=60)
        again = desired_status(Observation(OWNER, spec=spec, plan=planned), first, later)
        assert status_patch(again, first) == {}


def test_a_refused_apply_writes_this_generations_plan_marked_not_applied(case: Case) -> None:
    """Day-2 finding: an `ApplyFailed` reconcile kept the previous plan in status beside the new
    generation, so status.plan described neither the spec nor said it was not rolled out."""
    before = desired_status(_obs(case), None, T0)
    assert before["plan"]["applied"] is True
    newer = replace(case.owner, generation=case.owner.generation + 1)
    spec = case.spec.model_copy(update={"max_model_len": case.plan.chosen.max_model_len // 2})
    planned = plan(request_from_spec(spec))
    error = "PATCH /apis/leaderworkerset.x-k8s.io/v1/.../leaderworkersets/x: HTTP 422: denied"
    obs = Observation(
        newer, spec=spec, plan=planned, error_reason="ApplyFailed", error_message=error
    )
    refused = desired_status(obs, before, T0 + timedelta(seconds=5))
    DeepSeekV4DeploymentStatus.model_validate(refused)
    assert refused["observedGeneration"] == newer.generation
    assert refused["plan"] == {**plan_status(spec, planned), "applied": False}
    assert refused["plan"]["maxModelLen"] == planned.chosen.max_model_len
    assert refused["plan"]["maxModelLen"] != before["plan"]["maxModelLen"]
    conditions = {c["type"]: c for c in refused["conditions"]}
    assert _conditions(refused)["Ready"] == ("False", "ApplyFailed")
    assert _conditions(refused)["Degraded"] == ("True", "ApplyFailed")
    assert _conditions(refused)["Planned"] == ("True", "PlanReady")
    assert _conditions(refused)["Progressing"] == ("False", "ApplyFailed")
    assert error in conditions["Progressing"]["message"]
    assert "not applied" in conditions["Progressing"]["message"]
    # What runs is not this plan: the live counts and cost are left as the last rollout wrote.
    assert {"replicas", "readyReplicas", "cost"}.isdisjoint(refused)
    patch = status_patch(refused, before)
    assert patch["plan"]["applied"] is False
    # Without a plan (a reconcile error), status.plan is left alone, as before.
    bug = Observation(newer, error_reason="ReconcileError", error_message="boom")
    assert "plan" not in desired_status(bug, before, T0)


def test_a_reconcile_error_reports_this_generation_not_the_last_rollouts(case: Case) -> None:
    """h42: a `ReconcileError` (an API refusal no step expects, a bug) set Ready and Degraded
    only: Progressing kept `RolloutComplete`, status.plan the previous generation's plan beside
    the new observedGeneration, and the counts and Available what the last rollout read."""
    want = case.spec.replicas
    up = {"replicas": want, "readyReplicas": want, "updatedReplicas": want}
    running = desired_status(_obs(case, up), None, T0)
    assert _conditions(running)["Progressing"] == ("False", "RolloutComplete")
    newer = replace(case.owner, generation=case.owner.generation + 1)
    spec = case.spec.model_copy(update={"max_model_len": case.plan.chosen.max_model_len // 2})
    planned = plan(request_from_spec(spec))
    error = "the API server refused a request, retried every 10 s: ApiError: HTTP 403: denied"
    obs = Observation(
        newer,
        spec=spec,
        plan=planned,
        error_reason="ReconcileError",
        error_message=error,
        lws_status={"replicas": 2, "readyReplicas": 1},
        lws_target=(2, 0),
    )
    failed = desired_status(obs, running, T0 + timedelta(seconds=5))
    DeepSeekV4DeploymentStatus.model_validate(failed)
    conditions = {c["type"]: c for c in failed["conditions"]}
    assert failed["observedGeneration"] == newer.generation
    assert failed["plan"] == {**plan_status(spec, planned), "applied": False}
    assert _conditions(failed)["Ready"] == ("False", "ReconcileError")
    assert _conditions(failed)["Degraded"] == ("True", "ReconcileError")
    assert _conditions(failed)["Planned"] == ("True", "PlanReady")
    assert _conditions(failed)["Progressing"] == ("False", "ReconcileError")
    assert conditions["Progressing"]["message"].startswith(error)
    assert f"generation {newer.generation}) is not applied" in conditions["Progressing"]["message"]
    owned = ("Ready", "Planned", "Progressing", "Available", "Degraded")
    assert [conditions[t]["observedGeneration"] for t in owned] == [newer.generation] * 5
    assert (failed["replicas"], failed["readyReplicas"]) == (2, 1)  # the live LeaderWorkerSet's
    assert _conditions(failed)["Available"] == ("True", "MinimumReplicasAvailable")
    # Failed after its children were applied: the plan is said applied.
    applied = desired_status(replace(obs, plan_applied=True), running, T0)
    assert applied["plan"]["applied"] is True
    assert "is applied" in {c["type"]: c for c in applied["conditions"]}["Progressing"]["message"]
    # Failed before a plan (e.g. a planner bug): Planned is Unknown, status.plan is left.
    unplanned = replace(obs, spec=None, plan=None)
    bug = desired_status(unplanned, running, T0)
    assert "plan" not in bug
    assert _conditions(bug)["Planned"] == ("Unknown", "ReconcileError")
    assert _conditions(bug)["Progressing"] == ("False", "ReconcileError")
    assert (
        "status.plan is the last plan"
        in {c["type"]: c for c in bug["conditions"]}["Planned"]["message"]
    )
    # Its LeaderWorkerSet gone: no replicas, Available says so, Degraded still names the error.
    gone = desired_status(replace(obs, lws_status=None, lws_target=None, lws_absent=True), bug, T0)
    assert (gone["replicas"], gone["readyReplicas"]) == (0, 0)
    assert _conditions(gone)["Available"] == ("False", "LeaderWorkerSetNotFound")
    assert (
        "once a reconcile succeeds"
        in {c["type"]: c for c in gone["conditions"]}["Available"]["message"]
    )
    assert _conditions(gone)["Degraded"] == ("True", "ReconcileError")
    # Not read (e.g. 403 on LeaderWorkerSets): the counts are left as they were.
    unread = replace(obs, lws_status=None, lws_target=None)
    assert {"replicas", "readyReplicas"}.isdisjoint(desired_status(unread, running, T0))


def test_a_held_template_says_its_plan_is_not_applied(case: Case) -> None:
    held = desired_status(_obs(case, missing=("Secret ns/hf",), lws_held=True), None, T0)
    assert held["plan"]["applied"] is False
    assert desired_status(_obs(case, missing=("Secret ns/hf",)), None, T0)["plan"]["applied"]


def test_a_lasting_wait_is_said_in_progressing_only_and_once(case: Case) -> None:
    """Day-2 finding: a transient wait that lasted (a predecessor's Secret still being
    finalized) wrote no status at all."""
    wait = "Secret ns/x-admin: HTTP 409: left by a deleted DeepSeekV4Deployment: waiting"
    fresh = desired_status(Observation(case.owner, waiting=wait), None, T0)
    assert set(fresh) == {"conditions"}  # no observedGeneration: nothing of it is reported yet
    assert _conditions(fresh) == {"Ready": ("False", "Waiting"), "Progressing": ("True", "Waiting")}
    assert all(wait in c["message"] for c in fresh["conditions"])
    DeepSeekV4DeploymentStatus.model_validate(fresh)
    later = desired_status(Observation(case.owner, waiting=wait), fresh, T0 + timedelta(60))
    assert status_patch(later, fresh) == {}  # written once, not at every retry
    # A resource that runs keeps its Ready (its groups serve) and its reported generation.
    running = desired_status(_obs(case), None, T0)
    newer = replace(case.owner, generation=case.owner.generation + 1)
    waiting = desired_status(Observation(newer, waiting=wait), running, T0)
    assert set(status_patch(waiting, running)) == {"conditions"}
    assert _conditions(waiting)["Ready"] == _conditions(running)["Ready"]
    assert _conditions(waiting)["Progressing"] == ("True", "Waiting")
    done = desired_status(_obs(case), waiting, T0)
    assert _conditions(done)["Progressing"][1] != "Waiting"


def test_a_refusal_keeps_the_live_counts_and_says_a_missing_lws(case: Case) -> None:
    """While a child stays refused the live LeaderWorkerSet's counts and Available are
    reported (they had stayed as the last rollout left them); a LeaderWorkerSet that does not
    exist (its creation refused) is said, and Degraded keeps naming the refusal."""
    running = desired_status(_obs(case, {"replicas": 2, "readyReplicas": 2}), None, T0)
    error = "PATCH .../leaderworkersets/x: HTTP 403: exceeded quota"
    refused = Observation(
        case.owner,
        spec=case.spec,
        plan=case.plan,
        error_reason="ApplyFailed",
        error_message=error,
        lws_status={"replicas": 2, "readyReplicas": 0},
        lws_target=(2, 0),
    )
    now = desired_status(refused, running, T0)
    assert (now["replicas"], now["readyReplicas"]) == (2, 0)
    assert _conditions(now)["Available"] == ("False", "NoReplicaReady")
    absent = replace(refused, lws_status=None, lws_target=None, lws_absent=True)
    gone = desired_status(absent, now, T0)
    assert (gone["replicas"], gone["readyReplicas"]) == (0, 0)
    assert _conditions(gone)["Available"] == ("False", "LeaderWorkerSetNotFound")
    assert _conditions(gone)["Degraded"] == ("True", "ApplyFailed")
    unread = replace(refused, lws_status=None, lws_target=None)  # not read: left as they were
    assert {"replicas", "readyReplicas"}.isdisjoint(desired_status(unread, now, T0))
