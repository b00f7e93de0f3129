"""An NFSv4 server for an NFS-root boot, on the host but out of its way.

NFS-Ganesha (a userspace server: the test machine's kernel has no nfsd) runs in a private network and
mount namespace (`unshare -n -m`), exporting a copy of the marker tree on a tmpfs as `/root`. QEMU
joins only that network namespace (`nsenter -n`) and gives the guest user-mode networking: the guest
reaches the server at 10.0.2.2, which user-mode networking maps to the namespace's loopback. No port,
mount or service of the host is touched, and nothing outlives the `with` block.

    with nfs_server(tree, workdir) as server:
        boot(..., extra_args=NIC, prefix=server.enter, cmdline=f"root={server.root} rootfstype=nfs4 rw")
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

READY = "NFS SERVER INITIALIZED"
GUEST_SERVER = "10.0.2.2"  # user-mode networking's address of the host side
NIC = ("-nic", "user,model=virtio-net-pci")
EXPORT_PSEUDO = "/root"


@dataclass(frozen=True)
class NfsServer:
    pid: int
    log: Path

    @property
    def enter(self) -> tuple[str, ...]:
        """Command prefix that runs a program in the server's network namespace."""
        return ("nsenter", "-t", str(self.pid), "-n")

    @property
    def root(self) -> str:
        return f"{GUEST_SERVER}:{EXPORT_PSEUDO}"


def ganesha_config(export: Path) -> str:
    # NFSv4 over TCP only: no rpcbind, NLM or rquota needed. Graceless: no 90 s grace period at start.
    return f"""NFS_CORE_PARAM {{
  Protocols = 4; NFS_Port = 2049; Enable_NLM = false; Enable_RQUOTA = false;
}}
NFSV4 {{ Graceless = true; }}
EXPORT {{
  Export_Id = 1; Path = {export}; Pseudo = {EXPORT_PSEUDO}; Protocols = 4; Transports = TCP;
  Access_Type = RW; Squash = No_Root_Squash; SecType = sys;
  FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = EVENT; }}
"""


@contextmanager
def nfs_server(tree: Path, workdir: Path, timeout: float = 60) -> Iterator[NfsServer]:
    export = workdir / "export"
    export.mkdir(parents=True)
    conf, log = workdir / "ganesha.conf", workdir / "ganesha.log"
    conf.write_text(ganesha_config(export))
    log.write_text("")
    # tmpfs: the VFS backend needs file handles (name_to_handle_at), which overlay roots may lack.
    script = (
        'set -e; ip link set lo up; mount -t tmpfs -o size=128m tmpfs "$1"; cp -a "$2"/. "$1"/; '
        'exec ganesha.nfsd -F -f "$3" -L "$4" -p "$5"'
    )
    args = [str(export), str(tree), str(conf), str(log), str(workdir / "ganesha.pid")]
    proc = subprocess.Popen(
        ["unshare", "-n", "-m", "--propagation", "private", "sh", "-c", script, "sh", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "server.stderr", "wb"),  # noqa: SIM115 - closed with the process
    )
    try:
        deadline = time.monotonic() + timeout
        while READY not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = (workdir / "server.stderr").read_text(errors="replace")
                raise RuntimeError(
                    f"NFS server did not start: {err}\n{log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.2)
        yield NfsServer(proc.pid, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
