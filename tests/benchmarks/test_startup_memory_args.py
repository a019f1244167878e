"""`benchmarks/startup_memory.py` refuses bad `--group-sizes` before it touches a GPU.

`--group-sizes 0` ended in a ZeroDivisionError traceback after the NCCL set-up, a negative size
warmed the world group again under a `size-2` label, and a size that does not divide the world
was found only after every earlier step had run on the GPUs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "startup_memory.py"


def _run(*args: str, world: int = 2) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORLD_SIZE": str(world), "RANK": "0", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("sizes", ["0", "-2", "2,x", "4,,0"])
def test_a_group_size_that_is_not_a_positive_integer_exits_two_naming_the_flag(
    sizes: str,
) -> None:
    result = _run(f"--group-sizes={sizes}")
    assert result.returncode == 2, result.stderr
    assert "--group-sizes" in result.stderr
    assert "positive integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_group_size_that_does_not_divide_the_world_exits_two_before_any_gpu_step() -> None:
    result = _run("--group-sizes=2,3", world=4)
    assert result.returncode == 2, result.stderr
    assert "--group-sizes: 3 does not divide the world size 4" in result.stderr
    assert "Traceback" not in result.stderr
