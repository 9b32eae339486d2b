# syntax=docker/dockerfile:1
# squeezeserve images. NOT BUILT OR RUN YET: the machine this was written on has no Docker engine
# (docs/operations.md says what was and was not validated).
#
#   docker build -t squeezeserve:cuda .             # default: CUDA runtime image (last stage)
#   docker build -t squeezeserve:cpu --target cpu .  # CPU image, built exactly like CI (Debian 12)
#
# Both runtime stages carry the three binaries (squeezeserve, squeezectl, squeezeload) and the shared
# libraries they link, copied from the build stage with ldd: no guessing of runtime package names.
# The model is not in the image; mount it (the Helm chart mounts a PVC at /models/model).

ARG CUDA_VERSION=12.6.3
# Ubuntu 24.04: its gRPC (1.51), protobuf (3.21) and Abseil (20220623) match Debian 12's, which CI uses.
ARG CUDA_BASE=ubuntu24.04
# A libtorch C++ distribution built for the CUDA version above (cxx11 ABI).
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/cu126/libtorch-cxx11-abi-shared-with-deps-2.7.1%2Bcu126.zip

# ---------- CPU: Debian 12, the same scripts CI runs ----------
FROM debian:12 AS cpu-build
WORKDIR /src
COPY scripts/install_deps.sh scripts/install_deps.sh
RUN scripts/install_deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DSQUEEZESERVE_BUILD_TESTS=OFF -DSQUEEZESERVE_BUILD_BENCH=OFF -DSQUEEZESERVE_CUDA=OFF \
 && cmake --build build --target squeezeserve squeezectl squeezeload -j "$(nproc)"
COPY deploy/docker/collect_runtime.sh /usr/local/bin/collect_runtime.sh
RUN collect_runtime.sh /out build/server/squeezeserve build/client/squeezectl/squeezectl \
      build/client/squeezeload/squeezeload

FROM debian:12-slim AS cpu
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/squeezeserve squeezeserve
COPY --from=cpu-build /out/ /opt/squeezeserve/
ENV PATH=/opt/squeezeserve/bin:$PATH LD_LIBRARY_PATH=/opt/squeezeserve/lib
USER squeezeserve
EXPOSE 50051
# squeezectl info answers only once the model is loaded (UNAVAILABLE before), hence the start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["squeezectl", "--server", "127.0.0.1:50051", "--timeout", "4", "info"]
ENTRYPOINT ["squeezeserve", "--listen", "0.0.0.0:50051", "--device", "cpu"]
CMD ["--model", "/models/model", "--store", "/var/lib/squeezeserve/store"]

# ---------- CUDA: nvidia/cuda devel + libtorch zip ----------
FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-${CUDA_BASE} AS cuda-build
ARG LIBTORCH_URL
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config curl unzip ca-certificates \
      libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev libabsl-dev \
      libspdlog-dev nlohmann-json3-dev libssl-dev libsentencepiece-dev libgtest-dev \
 && rm -rf /var/lib/apt/lists/*
RUN curl -fsSL -o /tmp/libtorch.zip "${LIBTORCH_URL}" && unzip -q /tmp/libtorch.zip -d /opt && rm /tmp/libtorch.zip
WORKDIR /src
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_PREFIX_PATH=/opt/libtorch \
      -DSQUEEZESERVE_BUILD_TESTS=OFF -DSQUEEZESERVE_BUILD_BENCH=OFF -DSQUEEZESERVE_CUDA=ON \
 && cmake --build build --target squeezeserve squeezectl squeezeload -j "$(nproc)"
COPY deploy/docker/collect_runtime.sh /usr/local/bin/collect_runtime.sh
RUN collect_runtime.sh /out build/server/squeezeserve build/client/squeezectl/squeezectl \
      build/client/squeezeload/squeezeload

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-${CUDA_BASE} AS cuda
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/squeezeserve squeezeserve
COPY --from=cuda-build /out/ /opt/squeezeserve/
ENV PATH=/opt/squeezeserve/bin:$PATH LD_LIBRARY_PATH=/opt/squeezeserve/lib
USER squeezeserve
EXPOSE 50051
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
  CMD ["squeezectl", "--server", "127.0.0.1:50051", "--timeout", "4", "info"]
ENTRYPOINT ["squeezeserve", "--listen", "0.0.0.0:50051", "--device", "cuda"]
CMD ["--model", "/models/model", "--store", "/var/lib/squeezeserve/store"]
