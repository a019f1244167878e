"""Both sides of the operator <-> runtime contract on every example: the operator's rendered
`dsv4-runtime` arguments parse, re-render identically, and give valid vLLM command lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dsv4_operator.api.v1alpha1.deployment import parse_deployment
from dsv4_operator.planning import plan
from dsv4_operator.planning.from_spec import request_from_spec
from dsv4_operator.render.runtime_args import runtime_args
from dsv4_runtime.config import RuntimeConfig
from dsv4_runtime.distributed import Role
from dsv4_runtime.vllm_args import vllm_serve_argv

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def _deployments(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return [d for d in docs if d.get("kind") == "DeepSeekV4Deployment"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_rendered_args_parse_and_launch(path: Path, vllm_flags: dict[str, Any]) -> None:
    deployments = _deployments(path)
    assert deployments, f"{path.name} has no DeepSeekV4Deployment"
    for body in deployments:
        spec = parse_deployment(body).spec
        args = runtime_args(spec, plan(request_from_spec(spec)))
        config = RuntimeConfig.from_args(args)
        assert config.to_args() == args
        for index in range(config.nodes):
            argv = vllm_serve_argv(config, Role(index, config.nodes, "leader"), "10.0.0.1")
            options = [a.partition("=")[0] for a in argv[3:] if a.startswith("--")]
            unknown = [o for o in options if o not in vllm_flags and "." not in o]
            assert not unknown, f"{path.name} pod {index}: not vLLM 0.33.0 options: {unknown}"


def test_the_operator_refuses_every_flag_the_runtime_owns() -> None:
    # What the runtime would refuse at pod start, the operator refuses on the CR (InvalidSpec).
    from dsv4_operator.api.v1alpha1 import engine
    from dsv4_runtime import vllm_args

    runtime_long = {
        spelling
        for flag in vllm_args.OWNED_FLAGS
        for spelling in (flag.name, *flag.aliases, *flag.negations)
        if spelling.startswith("--")
    }
    assert set(engine.OPERATOR_OWNED_FLAGS) | set(engine.RUNTIME_OWNED_FLAGS) == runtime_long
    assert not set(engine.OPERATOR_OWNED_FLAGS) & set(engine.RUNTIME_OWNED_FLAGS)
    assert engine.PREFIX_FLAGS == vllm_args.PREFIX_FLAGS


async def test_the_admin_secret_token_opens_the_runtime_drain() -> None:
    # The pod env the operator renders names the Secret it creates; the runtime, given that
    # Secret's token, takes the autoscaler's header and refuses any other.
    import base64

    from aiohttp.test_utils import TestClient, TestServer

    from dsv4_operator.render import Owner, leaderworkerset
    from dsv4_operator.render.admin import (
        ADMIN_TOKEN_ENV,
        admin_secret,
        bearer_header,
        token_from_secret,
    )
    from dsv4_runtime import server
    from dsv4_runtime.metrics import RuntimeMetrics

    assert server.ADMIN_TOKEN_ENV == ADMIN_TOKEN_ENV
    body = _deployments(EXAMPLES[0])[0]
    spec = parse_deployment(body).spec
    owner = Owner("d", "ns", "6c1f0a4e-2d6b-4c55-9d0e-3b1f7a2c8e90")
    secret = admin_secret(owner, spec.model, "0123abcd" * 8)
    token = token_from_secret(secret)
    assert token == "0123abcd" * 8
    lws = leaderworkerset(owner, spec, plan(request_from_spec(spec)), image="x:1")
    templates = lws["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        (container,) = templates[role]["spec"]["containers"]
        (entry,) = [e for e in container["env"] if e["name"] == ADMIN_TOKEN_ENV]
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        # What the kubelet puts in the variable: the Secret's data, decoded.
        value = base64.b64decode(secret["data"][ref["key"]]).decode()
        state = server.RuntimeState(
            metrics=RuntimeMetrics(), engine_metrics_url=None, admin_token=value
        )
        async with TestClient(TestServer(server.build_app(state))) as client:
            assert (await client.post("/drain")).status == 401
            assert (await client.post("/drain", headers=bearer_header("guess"))).status == 401
            assert (await client.post("/drain", headers=bearer_header(token))).status == 200
            assert state.held


def test_multi_node_pods_get_the_route_settle_time_the_runtime_reads() -> None:
    """h40: the route settle time first reached the runtime as a flag, which a runtime image
    built before it refuses (exit 2), crash-looping multi-node groups after an operator
    upgrade. It is a variable now: the runtime reads what the operator renders, and an older
    runtime's parser never sees it."""
    from dsv4_operator.render import Owner, leaderworkerset
    from dsv4_operator.render import runtime_args as ra
    from dsv4_runtime import cli, supervisor

    assert supervisor.ROUTE_SETTLE_ENV == ra.ROUTE_SETTLE_ENV
    owner = Owner("d", "ns", "6c1f0a4e-2d6b-4c55-9d0e-3b1f7a2c8e90")
    seen = set()
    for path in EXAMPLES:
        for body in _deployments(path):
            spec = parse_deployment(body).spec
            planned = plan(request_from_spec(spec))
            lws = leaderworkerset(owner, spec, planned, image="x:1")
            (container,) = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"][
                "containers"
            ]
            env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
            settle = cli.route_settle_seconds(env)
            nodes = planned.chosen.layout.nodes
            assert settle == (ra.ROUTE_SETTLE_SECONDS if nodes > 1 else 0), path
            assert RuntimeConfig.from_args(container["args"]).nodes == nodes
            seen.add(nodes > 1)
    assert seen == {True, False}
