"""`make demo`: the whole V-SEAM loop on the bundled model organism (filled in by the demo issue)."""

import sys


def main() -> int:
    print("vseam demo: not yet available (the model organism and demo land with issue 8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
