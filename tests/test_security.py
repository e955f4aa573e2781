"""Security: nothing unpickles, cell text is never run as Python, a local Ray listens on loopback
only with token authentication, run directories and the compile cache are user-only."""

import ipaddress
import json
import os
import pathlib
import re
import stat
import subprocess
import sys

import pytest

from cells import CellSyntaxError, parse
from results import RunStore
from search.executor import CACHE_DIR
from search.loop import run_toml
from searchkit import descendants, tiny

ROOT = pathlib.Path(__file__).parents[1]
PACKAGES = ["cells", "tasks", "search", "results", "analysis", "scripts", "benchmarks"]


def sources() -> list[pathlib.Path]:
    return [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]


def test_nothing_loads_a_pickle():
    risky = re.compile(r"\bpickle\.loads?\(|\bcloudpickle\b|\bjoblib\.load\b|\btorch\.load\(|"
                       r"allow_pickle\s*=\s*True|\bpd\.read_pickle\(|\bshelve\b|\bdill\b")  # fmt: skip
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sources() for m in risky.finditer(p.read_text())]
    assert found == []
    # every np.load says allow_pickle=False explicitly (its default has changed across versions)
    loads = [line for p in sources() for line in p.read_text().splitlines() if "np.load(" in line]
    assert loads and all("allow_pickle=False" in line for line in loads)


def test_cell_text_is_never_evaluated_as_python(tmp_path):
    assert not any(re.search(r"\b(eval|exec)\(", p.read_text()) for p in (ROOT / "cells").rglob("*.py"))
    marker = tmp_path / "ran"
    for text in (f"h_new = __import__('pathlib').Path('{marker}').touch()",
                 f"h_new = tanh(W(x) + W(h)) if open('{marker}', 'w') else h"):  # fmt: skip
        with pytest.raises(CellSyntaxError):
            parse(text)
    assert not marker.exists()


def test_run_directories_and_the_cache_are_user_only(tmp_path):
    store = RunStore(tmp_path / "runs" / "one")
    store.create(run_toml(tiny()))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o700
    from search.executor import local_ray_environment

    token = pathlib.Path(local_ray_environment()["RAY_AUTH_TOKEN_PATH"])
    assert stat.S_IMODE(pathlib.Path(CACHE_DIR).stat().st_mode) == 0o700
    assert stat.S_IMODE(token.stat().st_mode) == 0o600


def listening_sockets(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state that one of `pids` holds."""
    inodes = {}
    for pid in pids:
        try:
            for fd in pathlib.Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                host, port = address.split(":")
                raw = bytes.fromhex(host)
                if size == 4:
                    ip = ".".join(str(b) for b in raw[::-1])
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    ip = str(ipaddress.IPv6Address(words))
                found.append((inodes[inode], ip, int(port, 16)))
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is IPv4's loopback on a v6 socket
    return address.is_loopback or bool(mapped and mapped.is_loopback)


@pytest.mark.skipif(not pathlib.Path("/proc/net/tcp").exists(), reason="reads Linux's /proc")
def test_local_ray_listens_on_loopback_only_with_token_auth(ray_workers):
    ours = descendants(os.getpid())
    assert ours, "the local Ray's processes should run below this test process"
    listening = listening_sockets(ours | {os.getpid()})
    assert len(listening) >= 2, "Ray's GCS and raylet should be listening"
    assert all(is_loopback(ip) for _, ip, _ in listening), listening
    assert os.environ["RAY_AUTH_MODE"] == "token"  # left on for the Ray this process started


@pytest.mark.skipif(not pathlib.Path("/proc/net/tcp").exists(), reason="reads Linux's /proc")
def test_a_driver_that_imported_ray_first_still_gets_a_loopback_ray_with_token_auth():
    # a notebook's `import ray` before the executor: Ray has read its environment by then
    driver = ("import json, sys\nimport ray\nfrom search.executor import RayExecutor\n"
              "with RayExecutor(workers=1) as executor:\n"
              "    print(json.dumps(executor.worker_pids()), flush=True)\n"
              "    sys.stdin.read()")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # as a fresh shell's
    process = subprocess.Popen([sys.executable, "-c", driver], env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        pids = json.loads(process.stdout.readline() or "null")
        listening = listening_sockets(descendants(process.pid) | {process.pid})
        process.stdin.close()
        assert process.wait(timeout=120) == 0, process.stderr.read()[-2000:]
        assert pids and len(listening) >= 2, listening
        assert all(is_loopback(ip) for _, ip, _ in listening), listening
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
