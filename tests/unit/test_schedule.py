"""The shipped scheduling examples call commands that exist, with arguments that parse."""

import configparser
import shlex

import yaml

from imagekit.builders import STOP_GRACE_S
from imagekit.cli import _parser
from imagekit.roles import CHECKOUT

SCHEDULE = CHECKOUT / "schedule"


def _imagekit_args(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0].endswith("bootstrap") and words[1] == "imagekit"
    return words[2:]


def test_systemd_units() -> None:
    service = configparser.ConfigParser(strict=False, interpolation=None)
    service.read(SCHEDULE / "imagekit-nightly.service")
    args = _parser().parse_args(_imagekit_args(service["Service"]["ExecStart"]))
    assert args.command == "pipeline"
    assert service["Service"]["Type"] == "oneshot"
    # imagekit stops its own children in order; systemd must not SIGTERM them all at once,
    # nor SIGKILL the lot before a build's stop grace period is over.
    assert service["Service"]["KillMode"] == "mixed"
    assert service["Service"]["KillSignal"] == "SIGTERM"
    assert int(service["Service"]["TimeoutStopSec"]) >= STOP_GRACE_S + 60
    timer = configparser.ConfigParser()
    timer.read(SCHEDULE / "imagekit-nightly.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"


def test_ci_job() -> None:
    job = yaml.safe_load((SCHEDULE / "gitlab-ci.yml").read_text())["nightly-images"]
    (command,) = job["script"]
    assert _parser().parse_args(_imagekit_args(command)).command == "pipeline"
    assert "build/images/pipeline/" in job["artifacts"]["paths"]
