# syntax=docker/dockerfile:1
#
# smuxtun in a container: both binaries, static, in a distroless image that runs
# as an unprivileged user. The server is the entrypoint; run the client with
# --entrypoint /usr/local/bin/smuxtun-client. See README.md ("Docker").
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t smuxtun .
#
# Multi-platform images build natively on the build host and cross-compile:
#   docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 -t smuxtun .

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Set by BuildKit to the platform being built; empty means the builder's own.
ARG TARGETOS
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o /out/smuxtun-server ./cmd/server && \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w -X main.version=$VERSION" -o /out/smuxtun-client ./cmd/client

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/smuxtun-server /out/smuxtun-client /usr/local/bin/
# 65532 is distroless's "nonroot" user.
USER 65532:65532
# Server: KCP over UDP, or --transport tcp. Client: its local TCP listener.
EXPOSE 29900/udp 29900/tcp 12948/tcp
ENTRYPOINT ["/usr/local/bin/smuxtun-server"]
