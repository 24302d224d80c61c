# Warden — build, test, benchmark and run. `make test` installs what the tests
# need on a fresh Debian machine (as root) and fails loudly when it cannot.

GO      ?= go
BIN     := $(CURDIR)/bin
OPA_VERSION := v1.22.3
export GOFLAGS := -buildvcs=false

.PHONY: all build deps test test-go test-rego bench run fmt vet fuzz clean estserver modules

all: build

build: modules
	$(GO) build -o $(BIN)/ ./cmd/...

## modules: every WASM module (wasm-modules/<name>/, package main) as a WASI
## command, GOOS=wasip1 GOARCH=wasm, into bin/modules/<name>.wasm. Not
## -buildmode=c-shared: the host runs one job per instance through _start
## (docs/modules.md). -trimpath makes the digest reproducible.
modules:
	@mkdir -p $(BIN)/modules
	@for d in $$(GOOS=wasip1 GOARCH=wasm $(GO) list -e -f '{{if eq .Name "main"}}{{.Dir}}{{end}}' ./wasm-modules/*/); do \
		n=$$(basename $$d); \
		GOOS=wasip1 GOARCH=wasm $(GO) build -trimpath -o $(BIN)/modules/$$n.wasm $$d || exit 1; \
		echo "module $$n: $$(sha256sum $(BIN)/modules/$$n.wasm | cut -d' ' -f1)"; \
	done

## deps: install the tools and peers the tests need (idempotent).
deps:
	./scripts/deps.sh "$(BIN)" "$(OPA_VERSION)"

vet:
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

test: deps build modules vet test-rego test-go

## test-rego: the default policy's Rego tests under the standard opa CLI, unchanged.
test-rego:
	$(BIN)/opa test policy/default

# Everything runs under the race detector (the daemons the conformance
# suite starts are built without it; its in-process parts are checked).
test-go:
	$(GO) test -race -count=1 -timeout 25m ./...

## bench: figures side by side with their in-process baselines, one run.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2000x ./policy/ ./capabilities/ ./broker/keyd/
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 3s ./conformance/
	$(GO) test -run '^$$' -bench ESTEnroll -benchtime 3s ./wasm-modules/est/
	$(GO) test -run '^$$' -bench DPSProvision -benchtime 3s ./wasm-modules/dps/
	$(GO) test -run '^$$' -bench . -benchtime 2s ./wasm-modules/host/

## estserver: the EST test peer (separate tools/ module pinning GlobalSign
## est v1.0.7) into bin/; the tests also build it on demand.
estserver:
	cd tools && GOWORK=off $(GO) build -o $(BIN)/estserver ./estserver

## fuzz: run every fuzz target for FUZZTIME each.
FUZZTIME ?= 20s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

## run: start wardend on sockets in a temp folder with a sample config.
run: build
	./scripts/run.sh "$(BIN)"

clean:
	rm -rf $(BIN)
