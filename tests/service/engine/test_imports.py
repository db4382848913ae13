"""The serving path must not import torch (serving images do not ship it)."""

from __future__ import annotations

import subprocess
import sys


def test_data_plane_import_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import service.dataplane, service.registry, service.runtime, service.scheduler\n"
        "heavy = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
