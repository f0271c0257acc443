"""Boot plans: QEMU command lines per arch, kernel command lines, image checks, accelerator choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import arches
from lab.errors import UserError
from lab.vm import accel, command, qemu
from lab.vm.accel import Decision

TCG = Decision("tcg", "test")


def _plan(tmp_path: Path, arch: str, rootfs: str = qemu.HOST_ROOTFS, kvm: bool = False, **kw: object) -> qemu.BootPlan:
    return qemu.BootPlan(
        arch=arches.get(arch),
        kernel=tmp_path / "Image",
        accel=Decision("kvm" if kvm else "tcg", "test"),
        rootfs=rootfs,
        results_dir=tmp_path / "results",
        workdir=tmp_path,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("arch", "binary", "machine", "cpu", "console"),
    [
        ("x86_64", "qemu-system-x86_64", "q35,accel=tcg", "max", "console=ttyS0"),
        ("arm64", "qemu-system-aarch64", "virt,gic-version=3,accel=tcg", "max,pauth-impdef=on", "console=ttyAMA0"),
    ],
)
def test_argv_per_arch(tmp_path: Path, arch: str, binary: str, machine: str, cpu: str, console: str) -> None:
    argv = qemu.qemu_argv(_plan(tmp_path, arch, rootfs=str(tmp_path / "root.ext4")))
    assert argv[0] == binary
    assert argv[argv.index("-M") + 1] == machine
    assert argv[argv.index("-cpu") + 1] == cpu
    assert "-no-reboot" in argv and "-nodefaults" in argv
    append = argv[argv.index("-append") + 1]
    assert console in append and "panic=-1" in append and "oops=panic" in append
    assert "root=/dev/vda" in append and "init=/sbin/klab-init" in append
    assert f"file={tmp_path / 'root.ext4'},format=raw,if=none,id=rootdisk,snapshot=on" in argv
    assert argv.index("virtio-blk-pci,drive=rootdisk") < argv.index("virtio-9p-pci,fsdev=klab,mount_tag=klab")
    assert "virtio-9p-pci,fsdev=klab,mount_tag=klab" in argv
    assert "virtio-9p-pci,fsdev=results,mount_tag=results" in argv


def test_kvm_uses_host_cpu(tmp_path: Path) -> None:
    argv = qemu.qemu_argv(_plan(tmp_path, "x86_64", kvm=True))
    assert argv[argv.index("-cpu") + 1] == "host"
    assert "accel=kvm" in argv[argv.index("-M") + 1]


def test_host_rootfs_is_read_only_9p_with_the_lab_init(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "x86_64")
    argv = qemu.qemu_argv(plan)
    assert "local,id=root,path=/,security_model=none,multidevs=remap,readonly=on" in argv
    cmdline = qemu.kernel_cmdline(plan)
    assert "root=root rootfstype=9p" in cmdline and " ro " in cmdline
    assert f"init={plan.klab_dir / 'lab/guest/init'}" in cmdline


def test_ssh_forwards_loopback_only(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "x86_64", ssh_port=2222)
    argv = qemu.qemu_argv(plan)
    assert "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22" in argv
    assert "ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off" in qemu.kernel_cmdline(plan)


def test_agent_channel_is_virtio_serial(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "arm64", agent=True, socket_dir=tmp_path / "s")
    argv = qemu.qemu_argv(plan)
    assert f"socket,id=agent,path={tmp_path / 's' / 'agent.sock'},server=on,wait=off" in argv
    assert "virtserialport,chardev=agent,name=klab" in argv


def test_the_commands_streams_are_three_ports_qemu_connects_to(tmp_path: Path) -> None:
    """klab listens, QEMU connects (no server=on): the guest never runs before klab is there."""
    plan = _plan(tmp_path, "arm64", agent=True, stdio=True, socket_dir=tmp_path / "s")
    argv = qemu.qemu_argv(plan)
    assert argv.count("virtio-serial-pci") == 1, "one controller carries the agent's port and the command's"
    for stream in ("stdin", "stdout", "stderr"):
        assert f"socket,id=klab-{stream},path={tmp_path / 's' / f'{stream}.sock'}" in argv
        assert f"virtserialport,chardev=klab-{stream},name=klab.{stream}" in argv
    assert "virtserialport,chardev=agent,name=klab" in argv
    plain = qemu.qemu_argv(_plan(tmp_path, "x86_64"))
    assert "virtio-serial-pci" not in plain


def test_the_command_runs_in_the_callers_directory_only_on_the_hosts_root(tmp_path: Path) -> None:
    assert command.guest_cwd(_plan(tmp_path, "x86_64"), Path("/work/linux")) == "/work/linux"
    assert command.guest_cwd(_plan(tmp_path, "x86_64", rootfs=str(tmp_path / "root.ext4")), Path("/x")) is None


def test_a_socket_without_a_socket_dir_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="socket_dir"):
        qemu.qemu_argv(_plan(tmp_path, "x86_64", qmp=True))


def test_sockets_stay_short_under_a_deep_results_dir(tmp_path: Path) -> None:
    """CI's results live ~150 bytes deep; a UNIX socket path must stay under 108 bytes (QEMU refuses it)."""
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 5)
    sockets = tmp_path / "tmp"
    plan = command.make_plan(
        arches.get("x86_64"), tmp_path / "bzImage", TCG, workdir=deep, qmp=True, socket_root=sockets
    )
    assert plan.socket_dir is not None and plan.socket_dir.parent == sockets
    assert len(str(plan.qmp_socket)) < 108 or len(str(sockets)) > 90
    assert not str(plan.qmp_socket).startswith(str(deep))
    assert f"unix:{plan.qmp_socket},server=on,wait=off" in qemu.qemu_argv(plan)
    qemu.Machine(plan).close()
    assert not plan.socket_dir.exists(), "the machine removes its socket directory when it closes"


def test_planning_makes_no_directory(tmp_path: Path) -> None:
    """A plan is computed, never acted on: the machine makes its dirs when it starts."""
    plan = command.make_plan(
        arches.get("x86_64"), tmp_path / "bzImage", TCG, workdir=tmp_path / "w", agent=True, socket_root=tmp_path
    )
    assert plan.results_dir == (tmp_path / "w" / "results").resolve()
    assert list(tmp_path.iterdir()) == []
    plain = command.make_plan(arches.get("x86_64"), tmp_path / "bzImage", TCG, workdir=tmp_path / "w")
    assert plain.socket_dir is None
    stdio = command.make_plan(arches.get("x86_64"), tmp_path / "bzImage", TCG, workdir=tmp_path / "w", stdio=True)
    assert stdio.socket_dir is not None and not stdio.socket_dir.exists()


def test_user_append_comes_last(tmp_path: Path) -> None:
    cmdline = qemu.kernel_cmdline(_plan(tmp_path, "x86_64", append="lsm=landlock,yama"))
    assert cmdline.endswith("lsm=landlock,yama")


def test_deadlines_stretch_under_tcg(tmp_path: Path) -> None:
    assert _plan(tmp_path, "arm64").boot_timeout > _plan(tmp_path, "x86_64").boot_timeout
    assert _plan(tmp_path, "x86_64", kvm=True).boot_timeout == qemu.BOOT_TIMEOUT_KVM
    assert _plan(tmp_path, "x86_64").scaled(10) == 10 * qemu.TCG_FACTOR


def test_accel_tcg_requested_skips_the_probe() -> None:
    assert accel.decide(arches.get("x86_64"), "tcg").accel == "tcg"


def test_accel_unknown_value() -> None:
    with pytest.raises(UserError, match="unknown accelerator 'hvf'"):
        accel.decide(arches.get("x86_64"), "hvf")


def test_foreign_arch_is_never_kvm() -> None:
    works, why = accel.probe_kvm(arches.get("arm64"))
    assert not works and "TCG" in why


def test_kvm_requested_but_broken_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path))
    hangs = accel.Probes(
        kvm=lambda arch: (False, "a KVM test guest did not finish within 3s"),
        qemu_version=lambda arch: "QEMU emulator version 7.2.22",
    )
    with pytest.raises(UserError, match="--accel kvm, but KVM does not work here"):
        accel.decide(arches.get("x86_64"), "kvm", probes=hangs)
    decision = accel.decide(arches.get("x86_64"), "auto", probes=hangs)
    assert decision.accel == "tcg" and "cached" in decision.why


def test_probe_boot_sector_is_a_valid_mbr() -> None:
    sector = accel._x86_boot_sector()
    assert len(sector) == 512 and sector[-2:] == b"\x55\xaa"


@pytest.mark.parametrize(
    ("text", "exitstatus", "signalstatus", "cause"),
    [
        ("", 0, None, ""),  # the guest powered off or reset (-no-reboot): QEMU exits 0
        ("[  3.1] reboot: Power down\n", 0, None, ""),
        ("", None, 9, "was killed by signal 9 (SIGKILL)"),  # the OOM killer, a CI runner cancelling
        ("", None, 15, "was killed by signal 15 (SIGTERM)"),
        ("qemu-system-x86_64: terminating on signal 15 from pid 4242 (kill)\n", 0, None,
         "was stopped by signal 15 from pid 4242 (kill)"),
        ("qemu-system-aarch64: terminating on signal 2\n", 0, None, "was stopped by signal 2"),
        ("qemu-system-x86_64: -drive file=x: Could not open 'x': No such file\n", 1, None,
         "exited with status 1 (qemu-system-x86_64: -drive file=x: Could not open 'x': No such file)"),
        ("", 1, None, "exited with status 1"),
    ],
)  # fmt: skip
def test_qemu_ending_from_outside_is_named(text: str, exitstatus: int, signalstatus: int | None, cause: str) -> None:
    assert qemu.outside_cause(text, exitstatus, signalstatus) == cause
