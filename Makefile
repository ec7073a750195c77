# rcsgate — the two commands a newcomer needs are `make demo` and `make test`.
GO        ?= go
BIN       := $(CURDIR)/bin
TAGS      := goolm
DENDRITE  := github.com/matrix-org/dendrite/cmd
DENDRITE_VERSION := v0.13.8
PEBBLE    := github.com/letsencrypt/pebble/v2/cmd/pebble
PEBBLE_VERSION := v2.10.3
# Synapse, the second homeserver of the end-to-end suite, runs from a venv in
# bin/ (an external program, never imported). Wheels only, so installing
# needs no compilers; set SYNAPSE_PIP_FLAGS= to allow source builds.
SYNAPSE_VERSION := 1.163.2
SYNAPSE_PIP_FLAGS ?= --only-binary :all:
PYTHON    ?= python3
# matrix-js-sdk (with its Rust crypto) and the Node it runs on, from the
# committed lockfile (npm ci: exact versions and integrity hashes); an
# independent client for the end-to-end tests, never part of rcsgate.
JSCLIENT_SRC   := internal/e2e/testdata/jsclient
JSCLIENT_STAMP := $(BIN)/jsclient/.installed
export RCSGATE_BIN := $(BIN)

.PHONY: demo test build tools bench fuzz android apk android-test lint clean

## demo: a working deployment on loopback (Dendrite + rcsgate + simulated phone);
## it installs only what it runs (Dendrite), not the test peers
demo: build $(BIN)/dendrite
	$(BIN)/rcsgate-demo --state demo-state --bin $(BIN)

## test: unit, fuzz-seed and integration tests; the end-to-end suite once per
## homeserver (RCSGATE_HOMESERVER=dendrite|synapse|tuwunel|both|all, default all;
## both = Dendrite and Synapse). tuwunel's pass needs its test build next to the
## repository (TUWUNEL_DIR, default ../shared/peers/tuwunel): without it the pass
## is skipped with one line.
RCSGATE_HOMESERVER ?= all
TUWUNEL_DIR ?= $(abspath $(CURDIR)/../shared/peers/tuwunel)
TUWUNEL_ARCHIVE := tuwunel-1.4.6-x86_64-linux-gnu.xz
export RCSGATE_TUWUNEL_DIR := $(TUWUNEL_DIR)
# The first pass runs every package; only the end-to-end suite depends on
# the homeserver, so further passes rerun just it.
E2E_HOMESERVERS := $(if $(filter all,$(RCSGATE_HOMESERVER)),dendrite synapse tuwunel,$(if $(filter both,$(RCSGATE_HOMESERVER)),dendrite synapse,$(RCSGATE_HOMESERVER)))
test: build tools android android-test
	$(GO) vet -tags $(TAGS) ./...
	RCSGATE_HOMESERVER=$(firstword $(E2E_HOMESERVERS)) $(GO) test -tags $(TAGS) -count=1 -timeout 30m ./...
	for hs in $(wordlist 2,$(words $(E2E_HOMESERVERS)),$(E2E_HOMESERVERS)); do \
		if [ $$hs = tuwunel ] && [ ! -f "$(TUWUNEL_DIR)/$(TUWUNEL_ARCHIVE)" ]; then \
			echo "tuwunel pass skipped: $(TUWUNEL_DIR)/$(TUWUNEL_ARCHIVE) not found (set TUWUNEL_DIR)"; continue; \
		fi; \
		echo "end-to-end suite on $$hs"; start=$$(date +%s); \
		RCSGATE_HOMESERVER=$$hs $(GO) test -tags $(TAGS) -count=1 -timeout 30m ./internal/e2e || exit 1; \
		echo "end-to-end suite on $$hs: $$(( $$(date +%s) - start )) s"; \
	done

## build: the three binaries into bin/
build:
	@mkdir -p $(BIN)
	$(GO) build -tags $(TAGS) -o $(BIN)/rcsgate ./cmd/rcsgate
	$(GO) build -tags $(TAGS) -o $(BIN)/rcsgate-demo ./cmd/rcsgate-demo
	CGO_ENABLED=0 $(GO) build -o $(BIN)/rcsgate-agent ./cmd/rcsgate-agent

## tools: pinned test peers (Dendrite; Synapse; Pebble, the ACME test CA; the
## matrix-js-sdk E2EE test client) into bin/
tools: $(BIN)/dendrite $(BIN)/pebble $(BIN)/synapse-venv $(JSCLIENT_STAMP)
$(BIN)/dendrite:
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install $(DENDRITE)/dendrite@$(DENDRITE_VERSION) $(DENDRITE)/generate-keys@$(DENDRITE_VERSION) $(DENDRITE)/generate-config@$(DENDRITE_VERSION)
$(BIN)/pebble:
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install $(PEBBLE)@$(PEBBLE_VERSION)
# The stamp names the version, so changing SYNAPSE_VERSION rebuilds the venv;
# it is written last, so an interrupted install is redone.
SYNAPSE_STAMP := $(BIN)/synapse-venv/.matrix-synapse-$(SYNAPSE_VERSION)
$(BIN)/synapse-venv: $(SYNAPSE_STAMP)
$(SYNAPSE_STAMP):
	rm -rf $(BIN)/synapse-venv
	$(PYTHON) -m venv $(BIN)/synapse-venv
	$(BIN)/synapse-venv/bin/pip install --quiet --disable-pip-version-check $(SYNAPSE_PIP_FLAGS) matrix-synapse==$(SYNAPSE_VERSION)
	touch $@

$(JSCLIENT_STAMP): $(JSCLIENT_SRC)/package.json $(JSCLIENT_SRC)/package-lock.json
	rm -rf $(BIN)/jsclient && mkdir -p $(BIN)/jsclient
	cp $(JSCLIENT_SRC)/package.json $(JSCLIENT_SRC)/package-lock.json $(BIN)/jsclient/
	cd $(BIN)/jsclient && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## android: the agent must always cross-build for phones without cgo
android:
	CGO_ENABLED=0 GOOS=android GOARCH=arm64 $(GO) build -o /dev/null ./cmd/rcsgate-agent

## apk: the phone app, signed, into bin/rcsgate-phone.apk (agent/android/build.sh: no Gradle;
## the first run fetches pinned jars from Maven Central into ~/.m2, later runs are offline)
APK := $(BIN)/rcsgate-phone.apk
apk:
	GO=$(GO) agent/android/build.sh apk $(APK)

## android-test: the APK's checks (badging, signatures, alignment, size) and the app's JVM tests
android-test: apk
	agent/android/build.sh check $(APK)
	agent/android/build.sh test

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
	$(GO) test -run '^$$' -fuzz FuzzFetchMedia -fuzztime $(FUZZTIME) ./internal/wire
	$(GO) test -run '^$$' -fuzz FuzzWebhook -fuzztime $(FUZZTIME) ./agent/backend/smsgateway
	$(GO) test -run '^$$' -fuzz FuzzParseList -fuzztime $(FUZZTIME) ./agent/backend/termux
	$(GO) test -run '^$$' -fuzz FuzzDecodeLine -fuzztime $(FUZZTIME) ./agent/backend/execbackend

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

## chanbench: device channel over QUIC vs WebSocket/TLS 1.3/TCP, loopback and impaired links
## (impaired links need root for namespaces; CHANBENCH_FLAGS=-quick for a tiny run)
.PHONY: chanbench
chanbench:
	$(GO) run ./cmd/rcsgate-chanbench $(CHANBENCH_FLAGS)

## bench-phone-app: the Matrix → phone → Matrix round trip through the phone app's path
## (its Java side, agent over stdio, fake SmsManager) next to the sim backend's, in one run
.PHONY: bench-phone-app
bench-phone-app: build tools apk
	$(GO) run -tags $(TAGS) ./cmd/rcsgate-bench --phone-app --bin $(BIN) $(BENCH_FLAGS)

## bench-catchup: catch-up's start-up cost with 50 portals (vs. catch-up off) and how fast messages
## the homeserver never pushed reach the phone after a bridge and a homeserver restart
.PHONY: bench-catchup
bench-catchup: build tools
	$(GO) run -tags $(TAGS) ./cmd/rcsgate-bench --catchup --bin $(BIN)

## bench-media: time and peak RSS of rcsgate and the agent while a 100 MiB file goes
## phone -> Matrix and Matrix -> phone, vs. direct upload+download (RCSGATE_HOMESERVER=dendrite|synapse)
.PHONY: bench-media
bench-media: build tools
	$(GO) run -tags $(TAGS) ./cmd/rcsgate-bench --media --bin $(BIN)
