# keel: one static binary. `make demo` runs a local cluster, `make test` runs
# every test (installing the Debian packages the tests drive when missing).

GO          ?= go
BIN         := bin/keel
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -s -w -X keel/node.Version=$(VERSION) -X keel/node.Commit=$(COMMIT)
PREFIX      ?= /usr
SBINDIR     ?= $(PREFIX)/sbin
UNITDIR     ?= /lib/systemd/system
DESTDIR     ?=
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME    ?= 10s

export CGO_ENABLED=0

.PHONY: all build test test-deps unit integration bench fuzz lint install demo clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) .

test-deps:
	scripts/test-deps.sh

# The race detector needs cgo; the binary under test stays static (built
# with CGO_ENABLED=0 by `build` and by the integration tests).
test: test-deps build
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	KEEL_BINARY=$(CURDIR)/$(BIN) CGO_ENABLED=1 $(GO) test -race -timeout 25m ./...

bench: build
	KEEL_BINARY=$(CURDIR)/$(BIN) scripts/bench.sh

# Short runs of every fuzz target (go test runs one target per invocation).
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(SBINDIR)/keel
	$(DESTDIR)$(SBINDIR)/keel install-links $(DESTDIR)$(SBINDIR) --target keel
	install -d -m 0755 $(DESTDIR)/etc/keel/keel.d
	test -e $(DESTDIR)/etc/keel/keel.toml || install -m 0644 dist/keel.toml $(DESTDIR)/etc/keel/keel.toml
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	for u in dist/systemd/*.service; do [ ! -e "$$u" ] || install -m 0644 "$$u" $(DESTDIR)$(UNITDIR)/; done

# A real local cluster in ./keel-demo (DEMO_FLAGS=--fresh to start over).
demo: build
	$(BIN) demo --dir keel-demo $(DEMO_FLAGS)

clean:
	rm -rf bin
