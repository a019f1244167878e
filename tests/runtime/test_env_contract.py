"""Every environment variable the runtime reads is in its README's pod contract."""

from __future__ import annotations

import ast
from pathlib import Path

from dsv4_runtime import distributed, preflight, progress, server, supervisor

RUNTIME = Path(distributed.__file__).resolve().parent
README = RUNTIME / "README.md"

NAMED = {
    "LWS_LEADER_ADDRESS": distributed.LWS_LEADER_ADDRESS,
    "LWS_GROUP_SIZE": distributed.LWS_GROUP_SIZE,
    "LWS_WORKER_INDEX": distributed.LWS_WORKER_INDEX,
    "POD_IP": distributed.POD_IP,
    "ADMIN_TOKEN_ENV": server.ADMIN_TOKEN_ENV,
    "IN_POD_VARIABLE": preflight.IN_POD_VARIABLE,
    "ROUTE_SETTLE_ENV": supervisor.ROUTE_SETTLE_ENV,
    "STALL_ENV": supervisor.STALL_ENV,
    "EXECUTE_MODEL_TIMEOUT_ENV": progress.EXECUTE_MODEL_TIMEOUT_ENV,
}
"""Module constants that name an environment variable, by the name the sources use."""


def _is_environment(node: ast.expr) -> bool:
    """`env` (the CLI's injected mapping) or `os.environ`."""
    if isinstance(node, ast.Name):
        return node.id == "env"
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _keys_read(tree: ast.AST) -> list[ast.expr]:
    """Keys of `env[K]`, `env.get(K)`, `os.environ.get(K)`, `K in env` and `K in os.environ`."""
    keys: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_environment(node.value):
            keys.append(node.slice)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and _is_environment(node.func.value)
            and node.args
        ):
            keys.append(node.args[0])
        elif (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and isinstance(node.ops[0], ast.In)
            and _is_environment(node.comparators[0])
        ):
            keys.append(node.left)
    return keys


def _variables_read() -> set[str]:
    """Names of the variables the runtime (not the reference engine) reads, resolved."""
    found: set[str] = set()
    for path in sorted(RUNTIME.glob("*.py")):
        for key in _keys_read(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                found.add(key.value)
            elif isinstance(key, ast.Name) and key.id in NAMED:
                found.add(NAMED[key.id])
            elif isinstance(key, ast.Name) and key.id in {"name", "n"}:
                continue  # loops over the LWS names above (role_from_env, _int_var)
            else:
                raise AssertionError(
                    f"{path.name}:{key.lineno}: unresolved env key {ast.dump(key)}"
                )
    return found


def test_the_scan_sees_the_variables_the_runtime_reads() -> None:
    read = _variables_read()
    # the LWS trio is read through loops; the rest directly
    assert {
        "POD_IP",
        "DSV4_RUNTIME_ADMIN_TOKEN",
        "KUBERNETES_SERVICE_HOST",
        "PATH",
        "DSV4_ROUTE_SETTLE_SECONDS",
        "DSV4_ENGINE_STALL_SECONDS",
        "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS",
    } <= read


def test_the_readme_documents_every_environment_variable_the_runtime_reads() -> None:
    text = README.read_text(encoding="utf-8")
    documented = {name for name in (_variables_read() | set(NAMED.values())) if name != "PATH"}
    missing = sorted(name for name in documented if f"`{name}`" not in text)
    assert not missing, f"runtime/dsv4_runtime/README.md does not document {missing}"
