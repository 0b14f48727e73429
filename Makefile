# discoverd — common tasks. `make help` lists them.
GO ?= go

.PHONY: help build image test test-race lint bench bench-quick bench-inproc dev fault fault-long fault-wal clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/discoverd
	$(GO) build -o bin/discoverd ./cmd/discoverd

image: ## build the container image discoverd:latest from the Dockerfile (needs docker)
	docker build -t discoverd:latest .

test: ## run every test (quick, without the race detector)
	$(GO) test -count=1 ./...

test-race: ## run every test with the race detector (what CI and the README run)
	$(GO) test -race -count=1 ./...

lint: ## gofmt, go vet (also with the fault build tags) and go mod tidy must be clean
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags faultroot,faultbugs,faultclock ./...
	@$(GO) mod tidy -diff || (echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1)

bench: ## discoverd vs etcd, 3-node clusters of real processes, full run with a million instances (~21 min, ~8 GiB free; report in test/reports/)
	$(GO) run ./test/bench

bench-quick: ## discoverd vs etcd, quick mode, with discoverd-wal, discoverd-acl and discoverd-tls beside discoverd (~4 min)
	$(GO) run ./test/bench -quick

bench-inproc: ## in-process Go benchmarks: registrations/s, heartbeats/s, watch fan-out, memory per instance
	$(GO) test -run '^$$' -bench 'Register|Heartbeat' -benchtime 5000x ./server/
	$(GO) test -run '^$$' -bench 'WatchFanout' -benchtime 300x ./server/
	$(GO) test -run '^$$' -bench 'Memory' -benchtime 1x ./server/

fault: ## the fault suite's CI tier: 13 scenarios of real processes under faults (~10-11 min)
	$(GO) run ./test/fault/cmd/fault -tier ci -q

fault-long: ## the long tier: many seeds, 5 nodes, the netns backend, disk and clock faults (root; installs nftables)
	@command -v nft >/dev/null || (apt-get update -qq && apt-get install -y -qq nftables iptables)
	$(GO) test -race -count=1 -tags faultroot ./test/fault/netns/
	$(GO) run ./test/fault/cmd/fault -tier long -q

fault-wal: ## the WAL log store under faults: kill, partitions, snapshot catch-up, a mixed cluster, disk faults (root for the disk; ~5 min)
	$(GO) run ./test/fault/cmd/fault -tier wal -q

dev: ## run a local 3-node cluster on 127.0.0.1:1111-1113
	$(GO) run ./cmd/discoverd dev

clean: ## remove build output
	rm -rf bin
