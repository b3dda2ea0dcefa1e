import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagekit import progress
from imagekit.cli import main
from imagekit.progress import Progress
from imagekit.publishing.upload import transfer


@pytest.fixture(autouse=True)
def normal_verbosity() -> Iterator[None]:
    yield
    progress.set_verbosity(progress.NORMAL)


def test_a_log_gets_a_line_per_stage_and_a_heartbeat_while_one_lasts() -> None:
    out = io.StringIO()
    shown = Progress("web", out, heartbeat_s=0.3)
    shown.update("install.d", "60-imagekit-admin-user")
    shown.update("install.d", "61-imagekit-cloud-init")  # a step: not a new line
    time.sleep(0.9)
    shown.finish("built")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("] install.d") and lines[-1].endswith("] built")
    assert any(
        line.endswith("] install.d 61-imagekit-cloud-init (still running)") for line in lines[1:-1]
    )
    count = len(lines)
    time.sleep(0.5)
    assert len(out.getvalue().splitlines()) == count, "no heartbeat after finish"


def test_a_closed_progress_beats_no_more() -> None:
    out = io.StringIO()
    shown = Progress("web", out, heartbeat_s=0.2)
    shown.update("uploading", "1/10 MiB")
    shown.close()
    time.sleep(0.5)
    assert out.getvalue().count("(still running)") == 0


def test_a_transfer_line_says_how_much_how_fast_and_how_long() -> None:
    line = transfer(50 << 20, 200 << 20, time.monotonic() - 10)
    assert line.startswith("50/200 MiB, 5.0 MiB/s, ") and line.endswith("30s left")


def test_verbose_shows_steps_and_quiet_shows_nothing() -> None:
    progress.set_verbosity(progress.VERBOSE)
    out = io.StringIO()
    shown = Progress("web", out, heartbeat_s=60)
    shown.update("install.d", "60-imagekit-admin-user")
    shown.update("install.d", "61-imagekit-cloud-init")
    shown.finish("built")
    assert out.getvalue().count("install.d") == 2
    progress.set_verbosity(progress.QUIET)
    quiet = io.StringIO()
    shown = Progress("web", quiet, heartbeat_s=0.1)
    shown.update("install.d")
    time.sleep(0.3)
    shown.finish("built")
    assert quiet.getvalue() == ""


def test_log_file_gets_what_stderr_gets(
    write_config: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config("ssh_keys: [{key}]\n")
    log = tmp_path / "imagekit.log"
    assert main(["--log-file", str(log), "--config", str(config), "diff", "nosuch"]) == 2
    assert "unknown role 'nosuch'" in capsys.readouterr().err
    assert "imagekit: error: unknown role 'nosuch'" in log.read_text()
    assert main(["--log-file", str(tmp_path / "no" / "dir.log"), "builds"]) == 2
    assert "--log-file" in capsys.readouterr().err
