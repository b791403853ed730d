# vseam serve on the official vLLM OpenAI image (GPU; the patch is pinned to vLLM 0.32.x).
#
#   docker build -t vseam .
#   docker run --gpus all -p 8000:8000 -v ~/.cache/huggingface:/root/.cache/huggingface -v $PWD/profiles:/profiles \
#       vseam llava-hf/llava-1.5-7b-hf --head-profile /profiles/attribute.json --head-profile /profiles/relation.json \
#       --host 0.0.0.0 --port 8000
#
# Everything after the image name is `vseam serve`'s argv: MODEL, --head-profile FILE..., [--fold],
# [--default-profile NAME] and any `vllm serve` flag. The shipped paper profiles are under
# /opt/vseam/head_profiles/paper/ inside the image.
FROM vllm/vllm-openai:v0.32.0

WORKDIR /opt/vseam
COPY pyproject.toml README.md ./
COPY vseam ./vseam
COPY head_profiles ./head_profiles
COPY calibrate ./calibrate
COPY serve ./serve
COPY patches ./patches
COPY benchmarks ./benchmarks

# The image already has vLLM and what serving needs (torch, transformers, pydantic, numpy, prometheus-client,
# httpx, openai). Install vseam without dependencies so pip never replaces the image's torch/vLLM; the offline
# calibration extras (segment-anything, diffusers, ...) are not needed to serve.
RUN pip install --no-cache-dir --no-deps . \
 && python3 -c "import importlib.metadata as m; assert any(e.value == 'vseam.patches.plugin:register' for e in m.entry_points(group='vllm.general_plugins'))" \
 && python3 -c "import vseam.serve.cli, vseam.serve.middleware, vseam.patches.head_scaling, vseam.head_profiles"

EXPOSE 8000
ENTRYPOINT ["vseam", "serve"]
CMD ["--help"]
