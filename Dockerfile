# discoverd's container image: a static binary on distroless, run as a
# non-root user. The Kubernetes manifests in deploy/kubernetes/ run it;
# deploy/deploy_test.go checks this file against them.
#
#   docker build -t discoverd:latest --build-arg VERSION=$(git describe --always --dirty) .
#   docker run --rm discoverd:latest version

# The Go of go.mod's go line. GOTOOLCHAIN=local: build with this image's Go
# or fail, never download another.
FROM golang:1.26 AS build
ENV CGO_ENABLED=0 GOTOOLCHAIN=local
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# CGO_ENABLED=0: a static binary, no libc needed in the final image.
RUN go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/discoverd ./cmd/discoverd

# distroless/static: CA certificates, /etc/passwd with the nonroot user
# (65532), no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/discoverd /discoverd
USER 65532:65532
# 1111: the native port (Raft, peers, clients). 8080: -http-addr in
# deploy/kubernetes (health and metrics).
EXPOSE 1111 8080
ENTRYPOINT ["/discoverd"]
