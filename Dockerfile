# `vision` on a CUDA runtime image, with onnxruntime-gpu from the project's `gpu` extra.
#   docker build -t vision .
#   docker run --gpus all -v "$PWD/data:/data" vision infer /data/in --model /data/model.onnx \
#       --out /data/job --device cuda
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The project requires Python 3.11 (Ubuntu 22.04 ships it as python3.11); the distribution's
# security updates are wanted, so its packages are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv "$VIRTUAL_ENV"

WORKDIR /opt/vision
COPY pyproject.toml README.md ./
COPY vision ./vision
COPY training ./training
COPY inference ./inference
COPY review ./review

# `onnxruntime` (a base dependency) and `onnxruntime-gpu` install the same module: the CPU
# build is removed so that the GPU build from the `gpu` extra is the one imported.
# Versions come from pyproject.toml (the project's own files), not from this file.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3013
RUN pip install ".[gpu]" \
    && pip uninstall -y onnxruntime \
    && pip install --force-reinstall --no-deps \
       "$(python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"][0])')" \
    && python -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()"

RUN useradd --create-home --uid 10001 vision
USER 10001
WORKDIR /home/vision
ENV VISION_TRT_CACHE=/home/vision/.cache/vision/trt

ENTRYPOINT ["vision"]
CMD ["--help"]
