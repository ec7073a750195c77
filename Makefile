# rcsgate — the two commands a newcomer needs are `make demo` and `make test`.
GO        ?= go
BIN       := $(CURDIR)/bin
TAGS      := goolm
DENDRITE  := github.com/matrix-org/dendrite/cmd
DENDRITE_VERSION := v0.13.8
PEBBLE    := github.com/letsencrypt/pebble/v2/cmd/pebble
PEBBLE_VERSION := v2.10.3
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

## tools: pinned test peers (Dendrite; Pebble, the ACME test CA) into bin/
tools: $(BIN)/dendrite $(BIN)/pebble
$(BIN)/dendrite:
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install $(DENDRITE)/dendrite@$(DENDRITE_VERSION) $(DENDRITE)/generate-keys@$(DENDRITE_VERSION) $(DENDRITE)/generate-config@$(DENDRITE_VERSION)
$(BIN)/pebble:
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install $(PEBBLE)@$(PEBBLE_VERSION)

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
	$(GO) test -run '^$$' -fuzz FuzzDecodeSegment -fuzztime $(FUZZTIME) ./agent/journal

clean:
	rm -rf $(BIN) demo-state

## install-units: the systemd units into $(DESTDIR)$(UNITDIR), @BINDIR@ replaced (see docs/systemd.md)
PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
UNITDIR ?= $(PREFIX)/lib/systemd/system
.PHONY: install-units
install-units:
	install -d $(DESTDIR)$(UNITDIR)
	for u in dist/systemd/*.service dist/systemd/*.socket; do \
		sed 's|@BINDIR@|$(BINDIR)|g' $$u > $(DESTDIR)$(UNITDIR)/$${u##*/}.tmp && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$${u##*/}.tmp && \
		mv $(DESTDIR)$(UNITDIR)/$${u##*/}.tmp $(DESTDIR)$(UNITDIR)/$${u##*/} || exit 1; \
	done

## nix-check: .nix files parse, vendorHash matches go.mod, module matches dist/systemd
## (set RCSGATE_NIXPKGS_LIB to a nixpkgs lib directory to also run the lib.evalModules test)
.PHONY: nix-check
nix-check:
	$(GO) test -count=1 ./nix/
