"""The sandbox student code runs in when it is graded: bubblewrap + an unprivileged user + resource limits.

Inside the sandbox a process sees:

- the system (``/usr``, ``/etc``, ...), the Python installation and the course library ``llmcourse``, read-only;
- the student's own folder and the kernel's connection folder, writable; an empty ``/tmp``;
- nothing else: not the repository (``solutions/``, the gradebook, other students), not ``$HOME``, no network
  (its own network namespace has only a loopback), its own process namespace, killed with its parent.

It runs as an unprivileged user (one uid per grading worker and role: the notebook's kernel, the outside checks and
the assembly each have their own, so limits and signals never cross between students graded at the same time, nor
between a student's notebook and the checks of their code) under rlimits on address space, CPU time, file size
and processes (a fork bomb hits the process limit). When the grader runs as a normal user instead of root, the
sandbox uses a user namespace and the process limit counts the instructor's own processes too.

``python -m autograder.sandbox SETTINGS.json {connection_file} [kernel args]`` is the kernel launcher that the
grading kernelspec runs: it reads the settings the grader wrote and execs the sandboxed ipykernel, which first runs
:mod:`autograder.kernel_setup` (warnings to stdout, output capped in bytes). :class:`SandboxFactory` makes every
sandbox of a grading run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import asdict, dataclass, field
from pathlib import Path

import llmcourse

GiB = 1024**3
SANDBOX_UID_BASE = 61000  # worker k's kernel runs as uid 61000 + k, its checks 61100 + k (no such user needs to exist)

class SandboxUnavailable(RuntimeError):
    """The sandbox cannot start here; the message says why and what to do."""


@dataclass
class Limits:
    memory_bytes: int = 4 * GiB  # RLIMIT_AS: address space of each process
    cpu_seconds: int = 900  # RLIMIT_CPU: CPU time of each process
    file_bytes: int = 256 * 1024**2  # RLIMIT_FSIZE: largest file a process may write
    processes: int = 256  # RLIMIT_NPROC: processes and threads of the sandbox user


@dataclass
class Sandbox:
    """One sandboxed run: what it may write, where it starts, its environment and limits."""

    writable: list[str]
    cwd: str
    readable: list[str] = field(default_factory=list)  # besides the system, Python and llmcourse
    env: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    uid: int | None = None  # None: the grader's own uid (inside a user namespace when not root)
    enabled: bool = True  # False only with --insecure: limits, but no isolation

    def command(self, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` inside this sandbox."""
        limits = [
            "prlimit", f"--as={self.limits.memory_bytes}", f"--cpu={self.limits.cpu_seconds}",
            f"--fsize={self.limits.file_bytes}", f"--nproc={self._nproc()}", "--core=0", "--",
        ]
        if not self.enabled:
            return limits + argv
        drop = []
        if self.uid is not None:
            drop = ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                    "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        return bwrap_prefix(self) + drop + limits + argv

    def _nproc(self) -> int:
        if self.uid is not None or not self.enabled:
            return self.limits.processes
        # as a normal user the limit counts every process of the user, so leave room for those already running
        return self.limits.processes + _processes_of(os.getuid())

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Sandbox:
        data = json.loads(text)
        data["limits"] = Limits(**data["limits"])
        return cls(**data)


def _processes_of(uid: int) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(list((entry / "task").iterdir()))
            except OSError:
                continue
    return count


def readable_paths() -> list[str]:
    """What the sandbox may read besides the system: this Python, its packages and the course library."""
    paths = {sys.prefix, sys.base_prefix, sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
             str(Path(llmcourse.__file__).resolve().parent)}
    paths |= {str(Path(p).resolve()) for p in list(paths)}
    # the real interpreter behind a venv's symlink
    paths.add(str(Path(sys.executable).resolve().parent.parent))
    return sorted(p for p in paths if Path(p).exists())


def course_packages_parent() -> str:
    """The folder holding the ``llmcourse`` (and ``autograder``) packages this grader runs. On the sandbox's
    PYTHONPATH it makes Python there import the same course code as the grader, even when the environment's
    editable install points at another checkout; only the bound packages are visible in it."""
    return str(Path(llmcourse.__file__).resolve().parent.parent)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _outermost(paths: list[str]) -> list[str]:
    """The paths that are not inside another of them (binding the outer one makes the inner one visible)."""
    return [p for p in paths if not any(q != p and _inside(p, q) for q in paths)]


SYSTEM_DIRS = ("/usr", "/etc", "/opt")
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")


def bwrap_prefix(sandbox: Sandbox) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(
            "bubblewrap is not installed, so student code cannot be isolated. Install it (Debian/Ubuntu: "
            "apt-get install bubblewrap), or pass --insecure to grade without a sandbox (trusted code only)."
        )
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-net", "--unshare-pid", "--unshare-ipc",
            "--unshare-uts", "--hostname", "grader"]
    if os.getuid() != 0:
        args.append("--unshare-user")
    for path in SYSTEM_DIRS:
        if Path(path).is_dir():
            args += ["--ro-bind", path, path]
    for path in SYSTEM_LINKS:
        p = Path(path)
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), path]
        elif p.is_dir():
            args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp", "--tmpfs", "/run",
             "--tmpfs", "/home", "--perms", "0777", "--dir", "/tmp/home"]
    readable = _outermost(readable_paths() + list(sandbox.readable))
    binds = [*readable, *sandbox.writable]
    # bubblewrap creates missing parents as root-only folders: make them traversable for the sandbox user
    parents = sorted({str(parent) for path in binds for parent in Path(path).parents
                      if str(parent) not in ("/", "/tmp") and not any(_inside(str(parent), b) for b in binds)},
                     key=lambda p: p.count("/"))
    for parent in parents:
        args += ["--perms", "0755", "--dir", parent]
    for path in readable:
        args += ["--ro-bind", path, path]
    for path in sandbox.writable:
        args += ["--bind", path, path]
    args += ["--chdir", sandbox.cwd, "--clearenv"]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp/home",
           "LANG": "C.UTF-8", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": "/tmp/home/hf", "MPLCONFIGDIR": "/tmp/home/mpl", "PYTHONDONTWRITEBYTECODE": "1",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": course_packages_parent(), **sandbox.env}
    for key, value in env.items():
        args += ["--setenv", key, value]
    return args


def check_available() -> None:
    """Start a trivial sandbox, or raise :class:`SandboxUnavailable` saying why it cannot start here: bubblewrap
    missing or unable to create namespaces, or Python inside it unable to import the course library."""
    uid = SANDBOX_UID_BASE if os.getuid() == 0 else None
    bare = Sandbox(writable=[], cwd="/", uid=uid)
    try:
        proc = subprocess.run(bare.command(["/bin/true"]), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SandboxUnavailable(f"the sandbox could not start: {err}") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no message)"]
        raise SandboxUnavailable(
            f"the sandbox could not start (bubblewrap said: {detail[0]}). Unprivileged user namespaces or mount "
            "namespaces are blocked here (inside Docker, run it with --privileged or a seccomp profile that allows "
            "them). Pass --insecure to grade without a sandbox (trusted code only)."
        )
    proc = subprocess.run(bare.command([sys.executable, "-c", "import llmcourse, torch, nbformat"]),
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no message)"]
        raise SandboxUnavailable(
            f"the sandbox starts, but Python inside it cannot import the course's packages ({detail[0]}). The "
            f"sandbox shows these folders read-only: {', '.join(readable_paths())}. Install the course into this "
            f"Python (pip install -r requirements.txt) in a place other users may read"
            + (f" (the sandbox runs as uid {uid})" if uid is not None else "") + "."
        )


#: uid offsets of the sandboxes of one grading worker: its notebook kernel, its outside checks and its assembly
#: run as different users, so processes a student's notebook leaves behind never count against the checks' limit.
ROLES = {"kernel": 0, "probe": 100, "assembly": 200}


class SandboxFactory:
    """Every sandbox of a grading run, made the same way: ``make(role, slot, ...)`` gives the sandbox of worker
    ``slot`` for ``role`` ("kernel", "probe" or "assembly"), with that role's uid, the run's limits, and the
    writable folders handed to that uid."""

    def __init__(self, memory_gib: float = 4.0, cpu_seconds: int = 1800, insecure: bool = False):
        self.limits = Limits(memory_bytes=int(memory_gib * GiB), cpu_seconds=max(60, int(cpu_seconds)))
        self.insecure = insecure

    def uid(self, role: str, slot: int) -> int | None:
        return SANDBOX_UID_BASE + ROLES[role] + slot if os.getuid() == 0 and not self.insecure else None

    def make(self, role: str, slot: int, writable: list[Path], cwd: Path, env: dict[str, str],
             readable: tuple[Path, ...] = ()) -> Sandbox:
        uid = self.uid(role, slot)
        for path in writable:  # the sandbox user must be able to write there
            Path(path).mkdir(parents=True, exist_ok=True)
            if uid is not None:
                os.chown(path, uid, uid)
        return Sandbox(writable=[str(p) for p in writable], cwd=str(cwd), env=env, limits=self.limits, uid=uid,
                       enabled=not self.insecure, readable=[str(p) for p in readable])

    def check(self) -> None:
        if not self.insecure:
            check_available()


def grader_files(*names: str) -> tuple[Path, ...]:
    """The files (or folders) that make ``autograder.<name>`` (and nothing else of the grader) importable in a
    sandbox: never the grading folders (submissions, results, gradebook) beside them."""
    package = Path(__file__).resolve().parent
    return tuple(package / name for name in ("__init__.py", *names))


def write_kernelspec(folder: Path, settings: Path, name: str = "llmcourse-sandbox") -> None:
    """A kernelspec whose launcher starts ipykernel in the sandbox described by ``settings``."""
    spec = folder / "kernels" / name
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "autograder.sandbox", str(settings), "{connection_file}"],
        "display_name": "Python 3 (grading sandbox)",
        "language": "python",
        "interrupt_mode": "message",  # a signal from outside cannot reach into the sandbox's pid namespace
    }, indent=1))


def launch_kernel(settings: Path, connection_file: str, extra: list[str]) -> None:
    """Exec ipykernel inside the sandbox (the kernelspec's command)."""
    sandbox = Sandbox.from_json(Path(settings).read_text())
    if sandbox.uid is not None and sandbox.enabled:  # Jupyter writes it for its own user only (mode 0600)
        os.chown(connection_file, sandbox.uid, sandbox.uid)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", connection_file,
            "--IPKernelApp.exec_lines=import autograder.kernel_setup", *extra]
    cmd = sandbox.command(argv)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    launch_kernel(Path(sys.argv[1]), sys.argv[2], sys.argv[3:])
