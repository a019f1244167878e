"""`reference.ranks`: torchrun variables, SIGTERM to global rank 0 only, failures stop the rest."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

RANK_SCRIPT = """
import os, signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
rank = os.environ["RANK"]
def term(*_):
    (out / f"term{rank}").write_text("")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
(out / f"up{rank}").write_text(os.environ["WORLD_SIZE"] + " " + os.environ["LOCAL_RANK"])
if sys.argv[2] == "fail" and rank == "1":
    sys.exit(3)
while not (out / "term0").exists():  # followers end when rank 0 has drained (its stop message)
    time.sleep(0.05)
"""


def _launch(tmp_path: Path, mode: str, node_rank: int = 0) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "dsv4_runtime.reference.ranks", "--nnodes", "2"]
    cmd += ["--node-rank", str(node_rank), "--nproc-per-node", "2", "--master-addr", "h"]
    cmd += ["--master-port", "1", "--kill-grace-s", "5", "--", "-c", RANK_SCRIPT]
    return subprocess.Popen([*cmd, str(tmp_path), mode])


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_sigterm_reaches_only_global_rank_0(tmp_path: Path) -> None:
    proc = _launch(tmp_path, "serve")
    for rank in (0, 1):
        _wait_for(tmp_path / f"up{rank}")
    assert (tmp_path / "up1").read_text() == "4 1"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert (tmp_path / "term0").exists()
    assert not (tmp_path / "term1").exists()


def test_sigterm_reaches_every_rank_of_a_worker_pod(tmp_path: Path) -> None:
    proc = _launch(tmp_path, "serve", node_rank=1)  # global ranks 2 and 3
    for rank in (2, 3):
        _wait_for(tmp_path / f"up{rank}")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert (tmp_path / "term2").exists()
    assert (tmp_path / "term3").exists()


def test_a_failing_rank_stops_the_others_and_sets_the_status(tmp_path: Path) -> None:
    proc = _launch(tmp_path, "fail")
    assert proc.wait(timeout=30) == 3
    assert (tmp_path / "term0").exists()  # rank 0 was terminated, not left running


def _pod_of_one(tmp_path: Path, script: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "dsv4_runtime.reference.ranks", "--nnodes", "1"]
    cmd += ["--node-rank", "0", "--nproc-per-node", "1", "--master-addr", "h"]
    cmd += ["--master-port", "1", "--kill-grace-s", "5", "--", "-c", script]
    return subprocess.Popen(cmd)


def test_the_status_of_a_pods_only_rank_is_kept(tmp_path: Path) -> None:
    """With one rank per pod (DP=2 over 2 pods) its failure is also the last exit: the launcher
    must still report it, not 0 (the runtime logged "engine exited ... with status 0" after the
    rank was killed)."""
    assert _pod_of_one(tmp_path, "import sys; sys.exit(3)").wait(timeout=30) == 3
    killed = _pod_of_one(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert killed.wait(timeout=30) == 128 + signal.SIGKILL
    assert _pod_of_one(tmp_path, "pass").wait(timeout=30) == 0
