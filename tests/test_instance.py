"""``placement stop`` stops one instance by the process ids recorded in its state directory, never another's
(and never by ``ray stop``). Real processes stand in for the serving process and its Ray here; the
whole path through Ray Serve is exercised by ``make newcomer`` (scripts/newcomer.sh)."""

import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from placement.cli import app
from placement.serve import instance

SERVING = "import signal, sys, time\nsignal.signal(signal.SIGINT, lambda *_: sys.exit(0))\ntime.sleep(120)\n"


def _spawn(code: str, *argv: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code.replace("time.sleep(120)", "print('ready', flush=True)\ntime.sleep(120)"), *argv],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"  # started (handlers installed)
    return proc


@pytest.mark.slow
def test_stop_ends_the_recorded_processes_only(tmp_path):
    serving = _spawn(SERVING)
    ray_like = _spawn("import time; time.sleep(120)", "ray::fake", "session_i17")  # outlives a killed server
    bystander = _spawn("import time; time.sleep(120)", "ray::other-instance")
    try:
        instance.Instance(pid=serving.pid, url="http://127.0.0.1:1", started_at=time.time(),
                          ray_session_dir=str(tmp_path / "session_i17"), ray_pids=[ray_like.pid]).write(tmp_path)
        report = instance.stop(tmp_path, timeout_s=10)
        assert serving.wait(5) == 0  # SIGINT, as Ctrl-C: a graceful exit
        assert ray_like.wait(15) is not None
        assert bystander.poll() is None, "another instance's process must survive"
        assert "stopped serving process" in report and "leftover Ray" in report
        assert not (tmp_path / instance.RECORD_NAME).exists()
        with pytest.raises(LookupError, match="no running instance"):
            instance.stop(tmp_path)
    finally:
        for p in (serving, ray_like, bystander):
            p.kill()
            p.wait()


def test_a_recycled_pid_that_is_not_ray_is_left_alone(tmp_path):
    other = _spawn("import time; time.sleep(120)")  # no 'ray' on its command line
    try:
        instance.Instance(pid=2**22 + 17, url="u", started_at=0.0, ray_pids=[other.pid]).write(tmp_path)
        assert "already exited" in instance.stop(tmp_path, timeout_s=1)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_stop_command_names_the_state_dir(tmp_path):
    result = CliRunner().invoke(app, ["stop", "--state-dir", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 1 and "no running instance" in result.output


def test_serve_refuses_a_second_instance_on_the_same_state_dir(tmp_path):
    holder = _spawn("import time; time.sleep(120)")
    try:
        instance.Instance(pid=holder.pid, url="http://127.0.0.1:8000", started_at=0.0).write(tmp_path)
        result = CliRunner().invoke(app, ["serve", "--state-dir", str(tmp_path)], terminal_width=200)
        assert result.exit_code == 2
        assert "already serves http://127.0.0.1:8000" in " ".join(result.output.split())
    finally:
        holder.kill()
        holder.wait()
