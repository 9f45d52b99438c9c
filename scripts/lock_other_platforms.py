#!/usr/bin/env python3
"""Complete a package-lock.json with the other platforms' binary packages of buf and anvil.

Usage: scripts/lock_other_platforms.py package-lock.json  (after `npm install` changed the lock)

The registry this project is built against serves only the linux-x64 builds, so `npm install`
writes a lock without the darwin/win32/arm entries of the wrappers' optionalDependencies, and
`npm ci` then refuses the lock as out of sync. This adds those entries (name, version, os, cpu,
the public registry URL): npm skips them on other platforms without fetching them, and a machine
of that platform fetches them from the public registry.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OS = {"darwin": "darwin", "win32": "win32", "windows": "win32", "linux": "linux"}
CPU = {"arm64": "arm64", "x64": "x64", "amd64": "x64", "armv7": "arm", "arm": "arm", "ia32": "ia32"}


def complete(path: Path) -> list[str]:
    lock = json.loads(path.read_text())
    packages = lock["packages"]
    added = []
    for meta in list(packages.values()):
        for dep, version in (meta.get("optionalDependencies") or {}).items():
            key = f"node_modules/{dep}"
            if key in packages:
                continue
            parts = dep.rsplit("/", 1)[-1].split("-")
            os_name = next((OS[p] for p in parts if p in OS), None)
            cpu = next((CPU[p] for p in parts if p in CPU), None)
            if os_name is None or cpu is None:
                raise SystemExit(f"cannot tell the platform of {dep}")
            packages[key] = {
                "version": version,
                "resolved": f"https://registry.npmjs.org/{dep}/-/{dep.split('/')[-1]}-{version}.tgz",
                "cpu": [cpu],
                "optional": True,
                "os": [os_name],
            }
            added.append(dep)
    path.write_text(json.dumps(lock, indent=2) + "\n")
    return added


if __name__ == "__main__":
    for name in sys.argv[1:] or ["package-lock.json"]:
        done = complete(Path(name))
        print(f"{name}: added {len(done)} entries" + (f": {', '.join(done)}" if done else ""))
