# vseam on the official vLLM OpenAI image (GPU). Build and run:
#   docker build -t vseam .
#   docker run --gpus all -p 8000:8000 -v ~/.cache/huggingface:/root/.cache/huggingface vseam \
#       llava-hf/llava-1.5-7b-hf --head-profile head_profiles/paper/llava-attribute-wo-negative.json
FROM vllm/vllm-openai:v0.32.0

WORKDIR /opt/vseam
COPY pyproject.toml README.md ./
COPY vseam ./vseam
COPY head_profiles ./head_profiles
COPY calibrate ./calibrate
COPY serve ./serve
COPY patches ./patches
COPY benchmarks ./benchmarks
# vLLM is already in the image: install vseam and its non-vLLM dependencies only
RUN pip install --no-cache-dir -e .

EXPOSE 8000
ENTRYPOINT ["vseam", "serve"]
CMD ["--help"]
