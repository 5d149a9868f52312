"""A thin adb client: pick the device, push files, run shell commands.

Every call goes through the `adb` found on PATH, so tests can put a stand-in
script there; nothing here talks to a device in any other way.
"""

import dataclasses
import re
import shlex
import shutil
import subprocess

from tsm_keras.android_bench.errors import BenchError

PLATFORM_TOOLS_URL = "https://developer.android.com/tools/releases/platform-tools"
_DEVICE_LINE = re.compile(r"^(?P<serial>\S+)\s+(?P<state>.+?)\s*$")
_PROP_LINE = re.compile(r"^\[(?P<key>[^\]]+)\]: \[(?P<value>.*)\]$")


@dataclasses.dataclass
class ShellResult:
    """What one `adb shell` command returned.

    Args:
        command: the command string run on the device.
        returncode: its exit status (adb forwards it since Android 7).
        stdout: its standard output.
        stderr: its standard error.
    """

    command: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self):
        """stdout and stderr together: the benchmark tools log to stderr."""
        if self.stdout and self.stderr:
            return self.stdout.rstrip("\n") + "\n" + self.stderr
        return self.stdout or self.stderr


def parse_devices(text):
    """Parses `adb devices` into `[(serial, state), ...]`.

    States are `"device"` (ready), `"unauthorized"`, `"offline"`,
    `"no permissions (...)"`, `"recovery"`, ...
    """
    devices = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("List of devices") or line.startswith("*"):
            continue
        match = _DEVICE_LINE.match(line)
        if match:
            devices.append((match["serial"], match["state"]))
    return devices


def parse_getprop(text):
    """Parses the `[key]: [value]` lines of `adb shell getprop` into a dict."""
    properties = {}
    for line in text.splitlines():
        match = _PROP_LINE.match(line.strip())
        if match:
            properties[match["key"]] = match["value"]
    return properties


def _state_error(serial, state):
    if state == "unauthorized":
        return (
            f"device {serial} is unauthorized: unlock the phone and accept the 'Allow USB debugging' "
            "prompt (if none shows, revoke USB debugging authorizations in Developer options and replug)"
        )
    if state == "offline":
        return f"device {serial} is offline: replug the USB cable or run `adb kill-server` and retry"
    if state.startswith("no permissions"):
        return (
            f"adb has no permission to open device {serial}: add a udev rule for the phone "
            "(see https://developer.android.com/studio/run/device) or run `adb kill-server` as a user in plugdev"
        )
    return f"device {serial} is in state {state!r}, not 'device': boot it normally and enable USB debugging"


class Adb:
    """Runs adb commands against one device.

    Use `Adb.connect(serial)` to find adb and select the device; it raises a
    `BenchError` naming what to do when adb or the device is not usable.

    Args:
        executable: path of the adb binary.
        serial: the device serial passed as `adb -s SERIAL`.
        timeout: seconds allowed for one adb command.

    Example:

    >>> adb = Adb.connect(serial=None)  # doctest: +SKIP
    >>> adb.shell("getprop ro.product.model").stdout  # doctest: +SKIP
    'SM-S911B\\n'
    """

    def __init__(self, executable, serial, timeout=600):
        self.executable = executable
        self.serial = serial
        self.timeout = timeout

    @classmethod
    def connect(cls, serial=None, timeout=600):
        """Finds adb on PATH and selects the device to use.

        Args:
            serial: the `--serial` given by the user, or None to use the only
                connected device.
            timeout: seconds allowed for one adb command.

        Returns:
            An `Adb` bound to a device in the `device` state.

        Raises:
            BenchError: no adb, no device, several devices and no serial, the
                serial is not connected, or the device is not ready.
        """
        executable = shutil.which("adb")
        if executable is None:
            raise BenchError(
                f"adb not found on PATH: install Android platform-tools ({PLATFORM_TOOLS_URL}) "
                "and put its directory on PATH, or use --host to benchmark on this machine"
            )
        listing = _run([executable, "devices"], timeout=60)
        if listing.returncode != 0:
            raise BenchError(f"`adb devices` failed: {(listing.stderr or listing.stdout).strip()}")
        devices = parse_devices(listing.stdout)
        if not devices:
            raise BenchError(
                "no Android device found by adb: connect the phone over USB, enable USB debugging "
                "(Settings > Developer options) and check that `adb devices` lists it"
            )
        if serial is None:
            if len(devices) > 1:
                listed = ", ".join(f"{name} ({state})" for name, state in devices)
                raise BenchError(f"{len(devices)} devices connected ({listed}): pass --serial SERIAL to pick one")
            serial, state = devices[0]
        else:
            states = dict(devices)
            if serial not in states:
                listed = ", ".join(name for name, _ in devices)
                raise BenchError(f"device {serial} is not connected (adb lists: {listed}): check --serial")
            state = states[serial]
        if state != "device":
            raise BenchError(_state_error(serial, state))
        return cls(executable, serial, timeout=timeout)

    def _adb(self, *args, timeout=None):
        return _run([self.executable, "-s", self.serial, *args], timeout=timeout or self.timeout)

    def shell(self, command, timeout=None):
        """Runs `command` (a string for the device's sh) and returns a `ShellResult`."""
        completed = self._adb("shell", command, timeout=timeout)
        return ShellResult(command, completed.returncode, completed.stdout, completed.stderr)

    def push(self, local_path, remote_path):
        """Copies a file to the device; raises `BenchError` if adb refuses."""
        completed = self._adb("push", str(local_path), remote_path)
        if completed.returncode != 0:
            message = (completed.stderr or completed.stdout).strip().splitlines()
            detail = message[-1] if message else f"exit status {completed.returncode}"
            raise BenchError(
                f"adb push {local_path} -> {remote_path} failed: {detail} (check the free space on the device)"
            )

    def getprop(self):
        """All system properties of the device as a dict."""
        return parse_getprop(self.shell("getprop").stdout)

    def cat_lines(self, pattern):
        """The lines of the files matching a device-side glob (missing files give none)."""
        result = self.shell(f"cat {pattern} 2>/dev/null")
        return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def _run(argv, timeout):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise BenchError(
            f"`{shlex.join(str(part) for part in argv)}` did not finish in {timeout} s: "
            "check the device is awake and responsive"
        ) from error
