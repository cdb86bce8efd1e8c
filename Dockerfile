# dartserve, CPU image (Debian 12, Debian's LibTorch 1.13 with OpenBLAS).
#
#   docker build -t dartserve:latest .
#   docker run --rm -p 50051:50051 -p 8080:8080 -p 9464:9464 dartserve:latest
#
# The build stage installs dependencies with the same script CI runs (scripts/install-deps.sh)
# and configures with the same script and options (scripts/build.sh: Ninja, Release), so the
# image is built the way the tested binaries are. The runtime stage holds only the two
# binaries, the tokenizer module beside the server (text models' SentencePiece, loaded with
# dlopen from the executable's folder), the shared libraries they all load (collected with ldd by
# deploy/docker/collect-libs.sh) and the shipped weights. The GPU variant is Dockerfile.cuda;
# docs/deploy.md covers both.

ARG DEBIAN_IMAGE=debian:12-slim

FROM ${DEBIAN_IMAGE} AS build
WORKDIR /src
# The install script alone first: its layer stays cached while sources change. What only the
# tests, fuzzers and data preparation use is left out (the build configures without it).
COPY scripts/install-deps.sh scripts/
RUN DARTSERVE_DEPS_SKIP="clang libclang-rt-14-dev prometheus python3-torch python3-yaml chromium \
      chromium-driver python3-selenium dataset-fashion-mnist" \
      scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
# Configures exactly as CI does (scripts/build.sh), then builds only what the image ships.
RUN TARGET=dartserve scripts/build.sh && TARGET=dartserve-client scripts/build.sh
RUN deploy/docker/collect-libs.sh /stage/lib build/server/dartserve build/client/dartserve-client \
      build/model/libdartserve_sentencepiece.so \
 && install -D -m 0755 -t /stage/bin build/server/dartserve build/client/dartserve-client \
      build/model/libdartserve_sentencepiece.so \
 && mkdir -p /stage/weights \
 && cp -r weights/fmnist-dart weights/fmnist-dart-fm weights/shapes-dart weights/scenes64-dart weights/emoji-dart \
      /stage/weights/

FROM ${DEBIAN_IMAGE} AS runtime
LABEL org.opencontainers.image.title="dartserve" \
      org.opencontainers.image.description="DART image generation over gRPC (CPU)"
# A fixed numeric id, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 dartserve \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin dartserve
COPY --from=build /stage/ /opt/dartserve/
# The loader finds the collected libraries through its cache, for the server and for
# `docker exec ... dartserve-client` alike (no LD_LIBRARY_PATH to forget).
RUN echo /opt/dartserve/lib > /etc/ld.so.conf.d/dartserve.conf && ldconfig
ENV PATH=/opt/dartserve/bin:${PATH} \
    OMP_NUM_THREADS=2
# The server's default --model (weights/fmnist-dart-fm, weights/fmnist-dart, weights/shapes-dart,
# weights/scenes64-dart, weights/emoji-dart)
# is relative to this folder.
WORKDIR /opt/dartserve
USER 10001:10001
# gRPC, HTTP (JSON API and web page), and Prometheus metrics (/metrics).
EXPOSE 50051 8080 9464
# grpc.health.v1 Check: exit 0 only when SERVING (models loaded and warmed up). Start-up loads
# LibTorch and the weights and generates one warm-up image per model, hence the start period.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["/opt/dartserve/bin/dartserve-client", "--server=127.0.0.1:50051", "--timeout=4", "health"]
# SIGTERM drains (docs/service.md); give `docker stop -t` more than --grace_seconds (30 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/dartserve/bin/dartserve"]
CMD ["--model=fmnist-dart-fm=/opt/dartserve/weights/fmnist-dart-fm,fmnist-dart=/opt/dartserve/weights/fmnist-dart,shapes-dart=/opt/dartserve/weights/shapes-dart,scenes64-dart=/opt/dartserve/weights/scenes64-dart,emoji-dart=/opt/dartserve/weights/emoji-dart", \
     "--port=50051", "--http_port=8080", "--metrics_port=9464"]
