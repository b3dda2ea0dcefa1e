"""A fresh SSH key pair per run, and waiting until an instance is ready."""

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from imagekit.errors import ImagekitError
from imagekit.files import write_private
from imagekit.instances import SshAddress


def make_key_pair(directory: Path, comment: str) -> tuple[Path, str]:
    """An ed25519 key pair only this run knows; returns (private key path, public line)."""
    key = Ed25519PrivateKey.generate()
    private = directory / "id_ed25519"
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    write_private(private, pem.decode())
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, f"{public.decode()} {comment}"


def connect(address: SshAddress, timeout: float = 10) -> paramiko.SSHClient:
    sock = None
    if address.proxy_command:
        command = address.proxy_command.replace("%h", address.host)
        sock = paramiko.ProxyCommand(command.replace("%p", str(address.port)))
    client = paramiko.SSHClient()
    # A throwaway instance's host key is new by definition.
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        address.host,
        port=address.port,
        username=address.user,
        key_filename=address.key_file,
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
        look_for_keys=False,
        allow_agent=False,
        sock=sock,
    )
    return client


# The guest's shell waits, not `cloud-init status --wait`: that is one more start of
# cloud-init's Python (2-3 s of a TCG guest's CPU) while the final stage runs. The
# final stage writes result.json last, with the errors of every stage.
CLOUD_INIT_RESULT = (
    "until [ -e /run/cloud-init/result.json ]; do sleep 1; done; cat /run/cloud-init/result.json"
)


def cloud_init_errors(result: str) -> list[str]:
    """The errors cloud-init recorded in result.json, each on one line; [] if none."""
    try:
        errors = json.loads(result)["v1"]["errors"]
    except (ValueError, KeyError, TypeError):
        return [f"unreadable /run/cloud-init/result.json: {result.strip()[-200:]!r}"]
    return [" ".join(str(error).split()) for error in errors]


# What a failure shows after its first line: the output of bootcmd, runcmd and the like.
CLOUD_INIT_LOG_TAIL = "sudo tail -n 25 /var/log/cloud-init-output.log"


def cloud_init_failure(errors: list[str], log_tail: str) -> str:
    """One message for every backend: cloud-init's errors first (a pipeline prints only
    that line), then its output log's tail."""
    return (
        f"cloud-init finished with errors: {'; '.join(errors)}\ncloud-init-output.log:\n{log_tail}"
    )


def run(client: paramiko.SSHClient, command: str, timeout: float) -> tuple[int, str]:
    _, stdout, _ = client.exec_command(command, timeout=timeout)
    output = stdout.read().decode(errors="replace")
    return stdout.channel.recv_exit_status(), output


# paramiko logs every refused early connection with a traceback; the wait
# itself reports what matters.
logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)


def wait_for_ssh(
    address: SshAddress, deadline: float, alive: Callable[[], str | None]
) -> paramiko.SSHClient:
    """Retry until SSH logs in; `alive` returns why the instance is gone, if it is."""
    last = "no answer"
    while time.monotonic() < deadline:
        if (gone := alive()) is not None:
            raise ImagekitError(gone)
        try:
            return connect(address)
        except (OSError, paramiko.SSHException, EOFError) as err:
            last = str(err) or type(err).__name__
        time.sleep(2)
    raise TimeoutError(f"SSH did not answer ({last})")


def wait_until_ready(
    address: SshAddress,
    started: float,
    timeout: float,
    alive: Callable[[], str | None],
    console: Callable[[], str],
) -> dict[str, float]:
    """Every backend's last step: SSH logs in, then cloud-init finishes.

    Returns the seconds since `started` of each; a failure or timeout says why
    and shows the last lines of the instance's console.
    """
    deadline = started + timeout
    try:
        client = wait_for_ssh(address, deadline, alive)
        timings = {"boot_to_ssh_s": round(time.monotonic() - started, 1)}
        with client:
            _, output = run(client, CLOUD_INIT_RESULT, max(deadline - time.monotonic(), 5))
            timings["cloud_init_done_s"] = round(time.monotonic() - started, 1)
            if errors := cloud_init_errors(output):
                _, log = run(client, CLOUD_INIT_LOG_TAIL, 30)
                raise ImagekitError(cloud_init_failure(errors, log))
    except TimeoutError as err:
        raise ImagekitError(f"{err} within {timeout:.0f}s; console:\n{console()}") from None
    except (ImagekitError, OSError, paramiko.SSHException) as err:
        raise ImagekitError(f"{err}; console:\n{console()}") from None
    return timings
