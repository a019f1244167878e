"""Suite-wide rules.

In CI (`DSV4_REQUIRE_E2E=1`, set by `.ci/run`) an e2e test that skips is turned into a failure:
the e2e layer must really run there. Elsewhere e2e tests may skip, with a reason naming what is
missing.
"""

import os
import platform
from pathlib import Path

# Triton's CPU interpreter runs `tl.dot` as numpy's matmul, and numpy's OpenBLAS picks its
# kernel by CPU at load (Haswell and Zen kernels use FMA, Sandybridge's does not), so the last
# bits of a kernel's logits differed from host to host: on an AMD EPYC (Zen kernels) the
# sampled indexer's tied-logit tests fell back where they were exact elsewhere. One kernel on
# every x86-64 host; set before anything imports numpy (OpenBLAS reads it once).
if platform.machine() in {"x86_64", "AMD64"}:
    os.environ.setdefault("OPENBLAS_CORETYPE", "Sandybridge")

import pytest

REQUIRE_E2E = os.environ.get("DSV4_REQUIRE_E2E") == "1"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Upstream fixtures: `$DSV4_FIXTURES`, default `../shared/fixtures` from the repository root.

    Skips (with the path in the reason) when the folder is missing.
    """
    path = Path(os.environ.get("DSV4_FIXTURES") or REPO_ROOT.parent / "shared" / "fixtures")
    if not path.is_dir():
        pytest.skip(f"fixtures folder missing: {path} (set DSV4_FIXTURES)")
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Fail, instead of skip, an e2e test that skipped while e2e is required."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if REQUIRE_E2E and report.skipped and item.get_closest_marker("e2e") is not None:
        report.outcome = "failed"
        report.longrepr = f"e2e test skipped while DSV4_REQUIRE_E2E=1: {report.longrepr}"
    return None
