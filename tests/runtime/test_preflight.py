"""Preflight: stale shm, shm size, GPUs and versions fail fast, naming expected and actual."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dsv4_runtime.config import RuntimeConfig
from dsv4_runtime.preflight import (
    GpuInfo,
    GpuProbeResult,
    PreflightError,
    Probes,
    check_versions,
    probe_gpus,
    run_preflight,
)

H200_BYTES = 143_771 * (1 << 20)  # nvidia-smi memory.total of an H200, MiB → bytes
H100_BYTES = 81_559 * (1 << 20)


def _versions(vllm: str | None = "0.33.0", transformers: str | None = "4.57.1") -> Probes:
    table = {"vllm": vllm, "transformers": transformers}
    return Probes(package_version=table.get)


def _gpus(*memory: int) -> GpuProbeResult:
    return GpuProbeResult(tuple(GpuInfo(i, "NVIDIA H200", m) for i, m in enumerate(memory)), "test")


def _config(shm: Path, **more: object) -> RuntimeConfig:
    config = RuntimeConfig(
        engine="vllm",
        model="deepseek-ai/DeepSeek-V4-Flash",
        served_model_name="flash",
        data_parallel_size=4,
        data_parallel_size_local=4,
        expected_gpus=4,
        expected_gpu_memory_bytes=H200_BYTES,
        expected_shm_bytes=2 << 30,
        shm_path=shm,
    )
    return config.replace(**more)


def _probes(**parts: object) -> Probes:
    base: dict[str, object] = {
        "package_version": {"vllm": "0.33.0", "transformers": "4.57.1"}.get,
        "shm_size_bytes": lambda _: 4 << 30,
        "gpus": lambda: _gpus(*[H200_BYTES] * 4),
        "in_pod": lambda: True,
    }
    base.update(parts)
    return Probes(**base)  # type: ignore[arg-type]


def test_all_checks_pass_and_stale_files_are_removed(tmp_path: Path) -> None:
    shm = tmp_path / "shm"
    (shm / "vllm-dir").mkdir(parents=True)
    (shm / "nccl-4f2a").write_bytes(b"x" * 4096)
    (shm / "vllm-dir" / "seg").write_bytes(b"y" * 100)
    report = run_preflight(_config(shm), _probes())
    assert (report.stale_entries_removed, report.stale_bytes_removed) == (2, 4196)
    assert list(shm.iterdir()) == []
    assert report.warnings == ()


def test_stale_shm_that_cannot_be_removed_fails(tmp_path: Path) -> None:
    shm = tmp_path / "shm"
    shm.mkdir()
    (shm / "psm_1a2b").write_bytes(b"z" * 512)
    (shm / "nccl-ok").write_bytes(b"")

    def remove(path: Path) -> None:
        if path.name.startswith("psm"):
            raise PermissionError(1, "Operation not permitted", str(path))
        path.unlink()

    with pytest.raises(PreflightError) as caught:
        run_preflight(_config(shm), _probes(remove=remove))
    message = str(caught.value)
    assert caught.value.check == "shm-stale"
    assert "expected 0 entries after cleanup, found 1 (512 bytes)" in message
    assert "psm_1a2b (PermissionError: [Errno 1] Operation not permitted" in message


def test_shm_too_small(tmp_path: Path) -> None:
    with pytest.raises(PreflightError) as caught:
        run_preflight(_config(tmp_path), _probes(shm_size_bytes=lambda _: 64 << 20))
    assert caught.value.check == "shm-size"
    assert (
        "expected at least 2147483648 bytes (2.00 GiB) (the plan's --expected-shm-bytes), "
        "actual 67108864 bytes (0.06 GiB)"
    ) in str(caught.value)


def test_shm_mount_missing(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match="actual: no such directory"):
        run_preflight(_config(tmp_path / "absent"), _probes())


def test_real_shm_size_probe(tmp_path: Path) -> None:
    config = _config(tmp_path, expected_shm_bytes=1 << 60)
    with pytest.raises(PreflightError, match=r"expected at least 1152921504606846976 bytes"):
        run_preflight(config, _probes(shm_size_bytes=Probes().shm_size_bytes))


def test_missing_gpu(tmp_path: Path) -> None:
    with pytest.raises(PreflightError) as caught:
        run_preflight(_config(tmp_path), _probes(gpus=lambda: _gpus(H200_BYTES, H200_BYTES, 0)))
    assert caught.value.check == "gpus"
    assert "expected 4 GPUs (the plan's --expected-gpus), actual 3 (test: 0: NVIDIA H200" in str(
        caught.value
    )


def test_no_gpu_probe_at_all(tmp_path: Path) -> None:
    none = GpuProbeResult((), "no nvidia-smi, and torch could not be imported")
    with pytest.raises(PreflightError) as caught:
        run_preflight(_config(tmp_path), _probes(gpus=lambda: none))
    assert "expected 4 GPUs (the plan's --expected-gpus), actual 0 (no nvidia-smi" in str(
        caught.value
    )


def test_gpu_with_too_little_memory(tmp_path: Path) -> None:
    with pytest.raises(PreflightError) as caught:
        run_preflight(_config(tmp_path), _probes(gpus=lambda: _gpus(*[H200_BYTES] * 3, H100_BYTES)))
    assert (
        "GPU 3 (NVIDIA H200): expected 150754820096 bytes (140.40 GiB) of memory per GPU (the "
        "plan's --expected-gpu-memory-bytes; at least 147739723695 bytes with the 2 % tolerance),"
        " actual 85520809984 bytes (79.65 GiB)"
    ) in str(caught.value)


@pytest.mark.parametrize(
    ("nominal", "reported", "passes"),
    [
        (80 << 30, H100_BYTES, True),  # catalogue 80 GiB, nvidia-smi 81,559 MiB
        (141 << 30, H200_BYTES, True),  # catalogue 141 GiB, nvidia-smi 143,771 MiB
        (94 << 30, H100_BYTES, False),  # planned an H100 NVL 94 GB, got an 80 GB card
        (100_000, 97_999, False),  # just under the 2 % floor (98,000)
        (100_000, 98_000, True),
    ],
)
def test_gpu_memory_tolerance(tmp_path: Path, nominal: int, reported: int, passes: bool) -> None:
    config = _config(tmp_path, expected_gpu_memory_bytes=nominal)
    probes = _probes(gpus=lambda: _gpus(*[reported] * 4))
    if passes:
        run_preflight(config, probes)
    else:
        with pytest.raises(PreflightError, match="The pod landed on a different GPU type"):
            run_preflight(config, probes)


def test_extra_gpus_are_a_warning(tmp_path: Path) -> None:
    report = run_preflight(_config(tmp_path), _probes(gpus=lambda: _gpus(*[H200_BYTES] * 8)))
    assert report.warnings == ("8 GPUs visible but the plan uses 4; the others stay idle",)


@pytest.mark.parametrize(
    ("vllm", "transformers", "message"),
    [
        ("0.19.1", "4.57.1", "vLLM >= 0.20.0 is required for DeepSeek-V4"),
        (None, "4.57.1", "found not installed; an older vLLM stops with 'Unrecognized model"),
        ("0.33.0", "4.51.1", "transformers > 4.51.1 is required for DeepSeek-V4, found 4.51.1"),
        ("0.33.0", None, "transformers > 4.51.1 is required for DeepSeek-V4, found not installed"),
    ],
)
def test_old_or_missing_versions(vllm: str | None, transformers: str | None, message: str) -> None:
    with pytest.raises(PreflightError) as caught:
        check_versions(_versions(vllm, transformers))
    assert caught.value.check == "versions"
    assert message in str(caught.value)
    if vllm == "0.19.1":
        assert "found 0.19.1" in str(caught.value)


@pytest.mark.parametrize(
    ("vllm", "transformers"),
    [("0.20.0", "4.51.2"), ("0.33.0+cu130", "5.0.0"), ("0.21.1.dev12+g1234abc", "4.57.0")],
)
def test_new_enough_versions(vllm: str, transformers: str) -> None:
    check_versions(_versions(vllm, transformers))


def test_reference_engine_skips_version_and_gpu_checks(tmp_path: Path) -> None:
    config = RuntimeConfig(
        engine="reference", model="tiny", served_model_name="tiny", shm_path=tmp_path
    )
    report = run_preflight(config, _probes(package_version=lambda _: None, gpus=_gpus))
    assert report.stale_entries_removed == 0


def test_nvidia_smi_output_is_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        'test "$1" = "--query-gpu=index,name,memory.total" || exit 9\n'
        "printf '0, NVIDIA H200, 143771\\n1, NVIDIA H200, 143771\\n'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert probe_gpus() == GpuProbeResult(
        (GpuInfo(0, "NVIDIA H200", H200_BYTES), GpuInfo(1, "NVIDIA H200", H200_BYTES)),
        "nvidia-smi",
    )


def test_failing_nvidia_smi_reports_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because it couldn'\"'\"'t communicate'; exit 9\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    result = probe_gpus()
    assert result.gpus == ()
    assert result.source.startswith("nvidia-smi failed: NVIDIA-SMI has failed")


@pytest.mark.parametrize(
    ("script", "source"),
    [
        ("printf '0, NVIDIA H200, [N/A]\\n'\n", "nvidia-smi printed an unreadable GPU line"),
        ("sleep 5\n", "nvidia-smi did not answer within 0.5 s"),
    ],
    ids=["n/a-memory", "hangs"],
)
def test_an_unreadable_or_hanging_nvidia_smi_gives_no_gpus_and_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, source: str
) -> None:
    from dsv4_runtime import preflight

    monkeypatch.setattr(preflight, "_PROBE_TIMEOUT_S", 0.5)
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    result = probe_gpus()
    assert result.gpus == ()
    assert result.source.startswith(source)


def test_outside_a_pod_shm_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "someone-elses-segment").write_bytes(b"keep")
    report = run_preflight(_config(tmp_path), _probes(in_pod=lambda: False))
    assert (tmp_path / "someone-elses-segment").read_bytes() == b"keep"
    assert report.stale_entries_removed == 0
    assert report.warnings == (
        f"not in a Kubernetes pod (KUBERNETES_SERVICE_HOST unset): {tmp_path} may be shared "
        "with other programs, so stale files were not removed",
    )
