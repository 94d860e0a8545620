# syntax=docker/dockerfile:1
#
# sinkd container image: a static binary on distroless, run as a non-root
# user whose only privilege is binding port 53.
#
#   docker build -t sinkd \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     --build-arg COMMIT="$(git rev-parse HEAD)" .
#
#   docker run -d --name sinkd --restart unless-stopped \
#     --cap-drop ALL --cap-add NET_BIND_SERVICE --read-only \
#     -p 53:53/udp -p 53:53/tcp \
#     -v /srv/sinkd/zones.d:/var/lib/sinkd/zones.d:ro \
#     -v sinkd-data:/var/lib/sinkd/data \
#     sinkd
#
# Mount your own config over /etc/sinkd/sinkd.yaml to change more
# (configs/docker.yaml is the one built in).

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
# setcap, to give the binary its one capability (below).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libcap2-bin \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/sinkd ./cmd/sinkd
# A file capability: the non-root process may bind ports below 1024 in any
# network mode (including --network host). The container must then keep
# NET_BIND_SERVICE in its bounding set, as Docker does by default;
# `--cap-drop ALL` alone makes the exec fail ("operation not permitted").
RUN setcap cap_net_bind_service=+ep /out/sinkd
# The state directory, owned by the image's non-root user (65532).
RUN mkdir -p /out/state/zones.d /out/state/data/hits \
 && chown -R 65532:65532 /out/state \
 && chmod -R 0750 /out/state

# static: CA certificates (for DoT and DoH upstreams), tzdata, /etc/passwd
# with the user "nonroot"; no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sinkd /usr/local/bin/sinkd
COPY configs/docker.yaml /etc/sinkd/sinkd.yaml
COPY --from=build --chown=65532:65532 /out/state /var/lib/sinkd
USER 65532:65532
WORKDIR /var/lib/sinkd
VOLUME ["/var/lib/sinkd/data"]
# DNS. 8053 (HTTP) answers only inside the container with the built-in
# config; see configs/docker.yaml to publish it.
EXPOSE 53/udp 53/tcp 8053/tcp
ENTRYPOINT ["/usr/local/bin/sinkd"]
CMD ["serve", "-config", "/etc/sinkd/sinkd.yaml"]
