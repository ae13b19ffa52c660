"""Make sure the Debian packages the tests, the demo and the benchmark use are present.

Installs the missing ones with apt-get when running as root; otherwise says exactly
what to install and exits non-zero.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

# program -> the Debian package that provides it
REQUIRED = {
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "mariadb": "mariadb-client",
    "mysqltest": "mariadb-test",
    "sysbench": "sysbench",
    "pt-query-digest": "percona-toolkit",
}
# file (glob) -> the Debian package that provides it (libraries, not programs)
REQUIRED_FILES = {
    # LPeg for Lua 5.1: mysql-proxy's lib/proxy/auto-config.lua needs it (reference 8.6)
    "/usr/lib/*-linux-gnu*/lua/5.1/lpeg.so": "lua-lpeg",
}
SEARCH_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin"


def missing_packages() -> list[str]:
    packages = []
    for program, package in REQUIRED.items():
        if shutil.which(program, path=SEARCH_PATH) is None and package not in packages:
            packages.append(package)
    for path, package in REQUIRED_FILES.items():
        if not glob.glob(path) and package not in packages:
            packages.append(package)
    return packages


def main() -> int:
    packages = missing_packages()
    if not packages:
        return 0
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(
            "mysqlproxy: the tests need these Debian packages: " + " ".join(packages) + "\n"
            "  install them with: sudo apt-get install " + " ".join(packages),
            file=sys.stderr,
        )
        return 1
    print("installing " + " ".join(packages) + " with apt-get", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
    )
    still = missing_packages()
    if still:
        print("mysqlproxy: still missing after install: " + " ".join(still), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
