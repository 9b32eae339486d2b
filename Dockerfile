# syntax=docker/dockerfile:1
# squeezeserve images.
#
#   docker build -t squeezeserve:cuda .             # default: CUDA runtime image (last stage)
#   docker build -t squeezeserve:cpu --target cpu .  # CPU image, built exactly like CI (Debian 12)
#
# What is validated (docs/operations.md "Images"): CI builds the CPU stage's runtime tree with the same
# script and runs it with only that tree and glibc visible, through a real ingest + generate
# (tests/deploy/run_image_isolated.py reads this file's cpu stage: ENV, ENTRYPOINT, CMD, HEALTHCHECK).
# No Docker engine runs in CI, so the image layers themselves and the CUDA stage are not built there.
#
# Both runtime stages carry the three binaries, the dlopen'ed sentencepiece module and the shared
# libraries they load, collected from the build (deploy/docker/build_runtime_tree.sh): no guessed runtime
# package names. The model is not in the image; mount it at /models/model (the Helm chart does).
# Ports: 50051 gRPC, 9090 Prometheus /metrics and /healthz.

# One libtorch for the CUDA image and the GPU validation runs (scripts/gpu/ uses the GPU machine's
# PyTorch; scripts/gpu/build.sh warns when its version differs from TORCH_VERSION).
ARG TORCH_VERSION=2.11.0
ARG CUDA_VERSION=13.0.1
ARG CUDA_TAG=cu130
# Ubuntu 24.04: its gRPC (1.51), protobuf (3.21) and Abseil (20220623) match Debian 12's, which CI uses.
ARG CUDA_BASE=ubuntu24.04

# ---------- CPU: Debian 12, the same scripts CI runs ----------
FROM debian:12 AS cpu-build
WORKDIR /src
COPY scripts/install_deps.sh scripts/install_deps.sh
COPY deploy/build-packages.txt deploy/build-packages.txt
RUN scripts/install_deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DSQUEEZESERVE_BUILD_TESTS=OFF -DSQUEEZESERVE_BUILD_BENCH=OFF -DSQUEEZESERVE_CUDA=OFF \
 && cmake --build build --target squeezeserve squeezectl squeezeload squeezeserve_spm -j "$(nproc)"
RUN deploy/docker/build_runtime_tree.sh build /out

FROM debian:12-slim AS cpu
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/squeezeserve squeezeserve
COPY --from=cpu-build /out/ /opt/squeezeserve/
ENV PATH=/opt/squeezeserve/bin:$PATH LD_LIBRARY_PATH=/opt/squeezeserve/lib
USER squeezeserve
EXPOSE 50051 9090
# grpc.health.v1 stays open when --auth_token_file is set, so the check needs no token. NOT_SERVING (exit
# 2) while the model loads, hence the start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["squeezectl", "--server", "127.0.0.1:50051", "--timeout", "4", "health"]
ENTRYPOINT ["squeezeserve", "--listen", "0.0.0.0:50051", "--metrics_listen", "0.0.0.0:9090", "--device", "cpu"]
CMD ["--model", "/models/model", "--store", "/var/lib/squeezeserve/store"]

# ---------- CUDA: nvidia/cuda devel + the libtorch C++ distribution ----------
FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-${CUDA_BASE} AS cuda-build
ARG TORCH_VERSION
ARG CUDA_TAG
WORKDIR /src
COPY deploy/build-packages.txt deploy/build-packages.txt
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config curl unzip ca-certificates \
      $(sed 's/#.*//' deploy/build-packages.txt) \
 && rm -rf /var/lib/apt/lists/*
RUN curl -fsSL -o /tmp/libtorch.zip \
      "https://download.pytorch.org/libtorch/${CUDA_TAG}/libtorch-shared-with-deps-${TORCH_VERSION}%2B${CUDA_TAG}.zip" \
 && unzip -q /tmp/libtorch.zip -d /opt && rm /tmp/libtorch.zip
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=/opt/libtorch \
      -DCMAKE_CUDA_ARCHITECTURES=90a -DSQUEEZESERVE_BUILD_TESTS=OFF -DSQUEEZESERVE_BUILD_BENCH=OFF \
      -DSQUEEZESERVE_CUDA=ON \
 && cmake --build build --target squeezeserve squeezectl squeezeload squeezeserve_spm -j "$(nproc)"
# libtorch loads some of its own libraries lazily (cuDNN engines, NVRTC builtins): ship its lib/ whole.
RUN deploy/docker/build_runtime_tree.sh build /out /opt/libtorch/lib

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-${CUDA_BASE} AS cuda
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/squeezeserve squeezeserve
COPY --from=cuda-build /out/ /opt/squeezeserve/
ENV PATH=/opt/squeezeserve/bin:$PATH LD_LIBRARY_PATH=/opt/squeezeserve/lib
USER squeezeserve
EXPOSE 50051 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
  CMD ["squeezectl", "--server", "127.0.0.1:50051", "--timeout", "4", "health"]
ENTRYPOINT ["squeezeserve", "--listen", "0.0.0.0:50051", "--metrics_listen", "0.0.0.0:9090", "--device", "cuda"]
CMD ["--model", "/models/model", "--store", "/var/lib/squeezeserve/store"]
