from __future__ import annotations

import platform
import subprocess
import sys


def test_glibc_takes_the_limit_on_its_arenas() -> None:
    # In a process of its own: the limit holds for the rest of a process's life.
    code = "from tranche.shared.malloc import limit_arenas; print(limit_arenas(2))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")
