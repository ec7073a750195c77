# rcsgate — the two commands a newcomer needs are `make demo` and `make test`.
GO        ?= go
BIN       := $(CURDIR)/bin
TAGS      := goolm
DENDRITE  := github.com/matrix-org/dendrite/cmd
DENDRITE_VERSION := v0.13.8
export RCSGATE_BIN := $(BIN)

.PHONY: demo test build tools bench fuzz android lint clean

## demo: a working deployment on loopback (Dendrite + rcsgate + simulated phone)
demo: build tools
	$(BIN)/rcsgate-demo --state demo-state --bin $(BIN)

## test: unit, fuzz-seed and integration tests against a real Dendrite
test: build tools android
	$(GO) vet -tags $(TAGS) ./...
	$(GO) test -tags $(TAGS) -count=1 -timeout 30m ./...

## build: the three binaries into bin/
build:
	@mkdir -p $(BIN)
	$(GO) build -tags $(TAGS) -o $(BIN)/rcsgate ./cmd/rcsgate
	$(GO) build -tags $(TAGS) -o $(BIN)/rcsgate-demo ./cmd/rcsgate-demo
	CGO_ENABLED=0 $(GO) build -o $(BIN)/rcsgate-agent ./cmd/rcsgate-agent

## tools: pinned test peers (Dendrite) into bin/
tools: $(BIN)/dendrite
$(BIN)/dendrite:
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install $(DENDRITE)/dendrite@$(DENDRITE_VERSION) $(DENDRITE)/generate-keys@$(DENDRITE_VERSION) $(DENDRITE)/generate-config@$(DENDRITE_VERSION)

## android: the agent must always cross-build for phones without cgo
android:
	CGO_ENABLED=0 GOOS=android GOARCH=arm64 $(GO) build -o /dev/null ./cmd/rcsgate-agent

## bench: round trip through the bridge vs. plain Matrix, and sustained rate
bench: build tools
	$(GO) run -tags $(TAGS) ./cmd/rcsgate-bench --bin $(BIN)

## fuzz: run each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzReadMsg -fuzztime $(FUZZTIME) ./internal/wire
	$(GO) test -run '^$$' -fuzz FuzzParsePairLink -fuzztime $(FUZZTIME) ./internal/wire
	$(GO) test -run '^$$' -fuzz FuzzParseDeviceID -fuzztime $(FUZZTIME) ./internal/pki
	$(GO) test -run '^$$' -fuzz FuzzNormalize -fuzztime $(FUZZTIME) ./internal/phone

clean:
	rm -rf $(BIN) demo-state
