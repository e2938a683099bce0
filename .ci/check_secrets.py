"""detect-secrets over every tracked file, against the committed baseline.

A finding the baseline does not hold as audited (``is_secret: false``) fails the check.
The scan runs on a copy of the baseline, so that a known finding whose line moved (an edit
above it) is still recognised by its hash and nothing in the checkout is rewritten, as
``detect-secrets-hook`` would do. Run by `make security`. After a reviewed addition:
``detect-secrets scan --baseline .secrets.baseline`` then ``detect-secrets audit
.secrets.baseline``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BASELINE = Path(".secrets.baseline")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="mercato-secrets-") as tmp:
        scanned = Path(tmp) / "baseline.json"
        shutil.copyfile(BASELINE, scanned)
        detect = Path(sys.executable).with_name("detect-secrets")
        # The copy does not exclude the real baseline (its hashes) from the scan: this does.
        exclude = ["--exclude-files", rf"^{BASELINE}$".replace(".", r"\.")]
        subprocess.run([str(detect), "scan", "--baseline", str(scanned), *exclude], check=True)
        results = json.loads(scanned.read_text())["results"]
    found = [
        (finding["filename"], finding["line_number"], finding["type"])
        for findings in results.values()
        for finding in findings
        if finding.get("is_secret") is not False
    ]
    for filename, line, kind in found:
        print(f"detect-secrets: {filename}:{line}: {kind} (not audited in {BASELINE})")
    known = sum(len(findings) for findings in results.values()) - len(found)
    print(f"detect-secrets: {len(found)} new findings, {known} audited as not secrets")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
