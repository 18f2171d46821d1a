"""scripts/install-test-deps.sh away from Debian: it names what to install and stops."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "install-test-deps.sh"


def test_without_apt_get_it_names_the_packages_per_platform_and_exits_1(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "id"):  # what the script needs before it looks for anything
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run(
        [bash, str(SCRIPT)],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path), "LANG": os.environ.get("LANG", "C")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "Missing: redis-server" in result.stderr
    for platform in ("Debian/Ubuntu:", "Fedora:", "macOS/Homebrew:"):
        assert platform in result.stderr
