"""Usable CPUs honour a cgroup CPU quota; OOM-kill counters are read where the kernel has them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workcrew._core import _system


def _fake_cgroup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cpu_max: str) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr(_system, "_cgroups", lambda: {"": str(tmp_path)})


def test_cpu_quota_caps_the_usable_cpu_count(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_cgroup(monkeypatch, tmp_path, "150000 100000\n")
    assert _system.cgroup_cpu_limit() == 1.5
    affinity = len(os.sched_getaffinity(0))
    assert _system.available_cpu_count() == min(affinity, 2)


def test_no_quota_means_the_affinity_mask(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_cgroup(monkeypatch, tmp_path, "max 100000\n")
    assert _system.cgroup_cpu_limit() is None
    assert _system.available_cpu_count() == len(os.sched_getaffinity(0))


def test_oom_kill_counter_v2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n")
    monkeypatch.setattr(_system, "_cgroups", lambda: {"": str(tmp_path)})
    assert _system.oom_kill_count() == 2
