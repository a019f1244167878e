"""Why a spec whose plan fits still cannot roll out: the checks that need the plan.

The API parse cannot make them (they depend on the planned layout), so the operator reports
them as `InvalidSpec` after planning (`handlers.reconciler`), and `dsv4 plan FILE` makes the
same checks, so that a manifest it calls `fits` is one the operator rolls out (h38).
"""

from __future__ import annotations

from dsv4_operator.api.errors import InvalidSpecError
from dsv4_operator.api.names import check_name_for_groups
from dsv4_operator.api.v1alpha1.scaling import surge_groups
from dsv4_operator.api.v1alpha1.spec import DeepSeekV4DeploymentSpec
from dsv4_operator.planning import Plan
from dsv4_operator.render.leaderworkerset import hf_cache_error
from dsv4_operator.render.placement import placement_error

__all__ = ["most_groups", "rollout_refusal"]


def most_groups(spec: DeepSeekV4DeploymentSpec) -> int:
    """The most replica groups `spec` can have at once, >= 1.

    Replicas or autoscaling maxReplicas (when a scaler is active), plus the rollout's surge
    groups.
    """
    a = spec.autoscaling
    most = max(spec.replicas, a.max_replicas if a.active_mode else 0, 1)
    return most + surge_groups(spec.rollout.max_surge, most)


def rollout_refusal(name: str, spec: DeepSeekV4DeploymentSpec, planned: Plan) -> str | None:
    """Why the fitting plan `planned` of resource `name` cannot roll out, or None.

    A group of several pods whose worker StatefulSet names (`<name>-<group index>`) would be
    too long for their pods (LWS creates no StatefulSet for one-pod groups), `spec.placement`
    that can never schedule the planned group, or an ephemeral-storage limit below the Hugging
    Face download.

    Args:
        name: the resource's `metadata.name`.
        spec: its spec.
        planned: its plan; `planned.fits` is the caller's check.

    Returns:
        One message naming the field and the limit, or None.
    """
    if planned.chosen.layout.nodes > 1:
        try:
            check_name_for_groups(name, most_groups(spec))
        except InvalidSpecError as error:
            return str(error)
    return placement_error(spec.placement, planned.chosen.layout.nodes) or hf_cache_error(
        spec, planned
    )
