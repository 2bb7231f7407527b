#!/usr/bin/env python3
"""Writes the root filesystem of RealMQ's FROM-scratch image as a reproducible tar: the
statically linked `realmq` at /usr/local/bin/realmq, /etc/passwd and /etc/group with the
service user (uid/gid 10001), /etc/nsswitch.conf (files, then DNS: a static glibc binary
resolves the StatefulSet's peer names from the /etc/hosts and /etc/resolv.conf the runtime
mounts), /tmp, and /data (the data volume, owned by the service user, so a fresh volume
inherits the owner). No base image is needed, so `make image` works on an engine that has no
images and reaches no registry.

Usage: mk-rootfs.py --binary PATH --out rootfs.tar [--uid 10001]
"""
import argparse
import io
import os
import sys
import tarfile

p = argparse.ArgumentParser()
p.add_argument("--binary", required=True)
p.add_argument("--out", required=True)
p.add_argument("--uid", type=int, default=10001)
a = p.parse_args()

with open(a.binary, "rb") as f:
    elf = f.read()
if elf[:4] != b"\x7fELF":
    sys.exit(f"{a.binary}: not an ELF file")
if b"/lib64/ld-linux-x86-64.so.2" in elf[:4096]:
    sys.exit(f"{a.binary}: dynamically linked; build it with RUSTFLAGS='-C target-feature=+crt-static' "
             "cargo build --release --target x86_64-unknown-linux-gnu")

MTIME = 0  # reproducible: the same binary gives the same tar


def entry(t, path, mode, uid, data=None):
    ti = tarfile.TarInfo(path)
    ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, uid, MTIME
    if data is None:
        ti.type = tarfile.DIRTYPE
        t.addfile(ti)
    else:
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))


u = a.uid
with tarfile.open(a.out, "w", format=tarfile.GNU_FORMAT) as t:
    for d in ("etc", "usr", "usr/local", "usr/local/bin"):
        entry(t, d, 0o755, 0)
    entry(t, "tmp", 0o1777, 0)
    entry(t, "data", 0o750, u)
    entry(t, "etc/passwd", 0o644, 0,
          f"root:x:0:0:root:/root:/sbin/nologin\nrealmq:x:{u}:{u}:realmq:/data:/sbin/nologin\n".encode())
    entry(t, "etc/group", 0o644, 0, f"root:x:0:\nrealmq:x:{u}:\n".encode())
    entry(t, "etc/nsswitch.conf", 0o644, 0, b"passwd: files\ngroup: files\nhosts: files dns\n")
    entry(t, "usr/local/bin/realmq", 0o755, 0, elf)
print(f"{a.out}: {os.path.getsize(a.out)} bytes")
