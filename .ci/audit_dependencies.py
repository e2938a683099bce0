"""pip-audit against the locked dependencies (uv.lock, every group and extra).

Fails on a known vulnerability. When the vulnerability service answers for none of the
packages (no network, or a package index without that service), the audit is skipped with
the reason printed: it proves nothing then, and saying "no known vulnerabilities" would lie.
Run by `make security`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent


def locked_requirements(path: Path) -> None:
    subprocess.run(
        [
            str(BIN / "uv"),
            "export",
            "--frozen",
            "--all-groups",
            "--all-extras",
            "--no-hashes",
            "--no-emit-project",
            "--quiet",
            "--output-file",
            str(path),
        ],
        check=True,
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mercato-audit-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        locked_requirements(requirements)
        run = subprocess.run(
            [
                str(BIN / "pip-audit"),
                "--requirement",
                str(requirements),
                "--disable-pip",  # the lock pins every package: nothing to resolve
                "--no-deps",
                "--format",
                "json",
                "--progress-spinner",
                "off",
                "--timeout",
                "20",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        reason = (run.stderr.strip().splitlines() or ["no report"])[-1]
        print(f"pip-audit: SKIPPED, the package index did not answer: {reason}")
        return 0
    packages = report.get("dependencies", [])
    audited = [package for package in packages if "skip_reason" not in package]
    vulnerable = [package for package in audited if package.get("vulns")]
    if not audited:
        reason = packages[0]["skip_reason"] if packages else "no package in the lock"
        print(
            f"pip-audit: SKIPPED, the vulnerability service answered for none of the"
            f" {len(packages)} locked packages ({reason})"
        )
        return 0
    for package in vulnerable:
        ids = ", ".join(vuln["id"] for vuln in package["vulns"])
        print(f"pip-audit: {package['name']} {package['version']}: {ids}")
    skipped = len(packages) - len(audited)
    print(
        f"pip-audit: {len(audited)} locked packages audited ({skipped} not found by the"
        f" service), {len(vulnerable)} with known vulnerabilities"
    )
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
