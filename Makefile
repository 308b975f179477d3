# TensorGuardFlow build, test and check entry points. CI calls only these
# targets (see .ci/run); DESIGN.md §5 fixes what `make build` produces.

export GOMLX_BACKEND = go:parallelism=-1
export PATH := $(CURDIR)/.cache/tools/bin:/usr/local/go/bin:$(PATH)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

FUZZTIME ?= 10s
BIN := bin
TOOLS_BIN := .cache/tools/bin
DEPS_STAMP := .cache/deps.stamp
TOOLS := $(TOOLS_BIN)/staticcheck $(TOOLS_BIN)/govulncheck
# libonnxruntime for this machine (hack/fetch-onnxruntime.sh; GOARCH names).
ORT_LIB := .cache/onnxruntime/$(patsubst x86_64,amd64,$(patsubst aarch64,arm64,$(shell uname -m)))/libonnxruntime.so.1

.PHONY: all build test check bench demo demo-up demo-down deb deb-test clean deps FORCE
.DEFAULT_GOAL := build
all: check test build

# hack/install-deps.sh writes the stamp; rerun it when a script changes or
# a tool or library it installs is gone. Cheap when nothing is missing.
$(DEPS_STAMP): hack/install-deps.sh hack/fetch-onnxruntime.sh $(if $(filter-out $(wildcard $(TOOLS) $(ORT_LIB)),$(TOOLS) $(ORT_LIB)),FORCE)
	bash hack/install-deps.sh
deps: FORCE
	bash hack/install-deps.sh

# Every main package under a cmd/ folder becomes bin/<name>: tgsp, tgctl,
# tg-agent, tg-controlplane. New commands are picked up without edits here.
build:
	@mkdir -p $(BIN)
	@mains="$$(go list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./... | grep -E '/cmd/[^/]+$$' || true)"; \
	if [ -z "$$mains" ]; then echo "build: no commands yet"; exit 0; fi; \
	echo go build -o $(BIN)/ $$mains; \
	go build -o $(BIN)/ $$mains

# Then the big-file tests, which skip themselves under -race (too slow), and a
# bounded run of every fuzz target.
test: $(DEPS_STAMP)
	go test -race -count=1 ./...
	@if [ -n "$$(go list ./tgsp/... 2>/dev/null)" ]; then \
		echo "go test -count=1 -run 'Large' ./tgsp/..."; \
		go test -count=1 -run 'Large' ./tgsp/...; \
	else echo "test: no tgsp packages yet, skipping the Large step"; fi
	FUZZTIME=$(FUZZTIME) bash hack/fuzz.sh

check: $(DEPS_STAMP)
	@echo "--- gofmt"
	@files="$$(find . -path ./.git -prune -o -path ./.cache -prune -o -name testdata -prune -o -name vendor -prune -o -name '*.go' -print)"; \
	if [ -n "$$files" ]; then \
		bad="$$(gofmt -l $$files)"; \
		if [ -n "$$bad" ]; then echo "gofmt: these files need gofmt -w:"; echo "$$bad"; exit 1; fi; \
	fi
	@echo "--- go vet"
	go vet ./...
	@echo "--- staticcheck"
	staticcheck ./...
	@echo "--- go mod tidy -diff"
	go mod tidy -diff
	@echo "--- import rules"
	go test -count=1 ./internal/archtest/
	@echo "--- cross-build linux/arm64"
	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build ./...
	@echo "--- govulncheck"
	bash hack/govulncheck.sh

bench: $(DEPS_STAMP)
	bash hack/bench.sh

# The demo (hack/demo.sh): everything in .demo/. demo-up leaves the stack
# running and prints how to poke it; demo-down stops it.
demo: $(DEPS_STAMP)
	bash hack/demo.sh
demo-up: $(DEPS_STAMP)
	bash hack/demo.sh up
demo-down:
	bash hack/demo-down.sh

# Debian packages into dist/ (packaging/README.md): tg-agent and
# tg-controlplane for amd64 and arm64 (DEB_ARCHES), the agent with cgo (arm64
# through Debian's cross compiler, run under qemu-user as a check), lintian
# on each. nfpm runs from its own module (hack/tools). VERSION defaults to
# the git description. deb-test installs, upgrades and purges them in a
# fresh Debian 12 root (hack/deb-test.sh; root, debootstrap).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null | sed 's/^v//; s/^\([0-9a-f]\{7,\}\)/0.0.0+g\1/' || echo 0.0.0)
DEB_ARCHES ?= amd64 arm64
NFPM := $(TOOLS_BIN)/nfpm
$(NFPM): hack/tools/go.mod hack/tools/go.sum
	go -C hack/tools build -o $(CURDIR)/$(NFPM) github.com/goreleaser/nfpm/v2/cmd/nfpm
deb: $(DEPS_STAMP) $(NFPM)
	VERSION=$(VERSION) DEB_ARCHES="$(DEB_ARCHES)" NFPM=$(CURDIR)/$(NFPM) bash hack/deb-build.sh
deb-test: $(DEPS_STAMP) $(NFPM)
	NFPM=$(CURDIR)/$(NFPM) bash hack/deb-test.sh

clean:
	rm -rf $(BIN) .demo .bench dist
	rm -f coverage.out coverage.html *.coverprofile
