# gopasst build. `make` writes passt, pasta (symlink), passt.avx2 (built with
# GOAMD64=v3) and pasta.avx2 at the top of the tree, like the C original.

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
GO      ?= go
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION)
GOARCH  := $(shell $(GO) env GOARCH)

BIN := passt pasta
ifeq ($(GOARCH),amd64)
BIN += passt.avx2 pasta.avx2
endif

.PHONY: all clean install check test-setup vet layers unit integration bench bench-quick FORCE

all: $(BIN)

passt: FORCE
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $@ ./cmd/passt

passt.avx2: FORCE
	GOAMD64=v3 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $@ ./cmd/passt

pasta: passt
	ln -sf passt $@

pasta.avx2: passt.avx2
	ln -sf passt.avx2 $@

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 755 passt $(DESTDIR)$(BINDIR)/passt
	ln -sf passt $(DESTDIR)$(BINDIR)/pasta
	if [ -f passt.avx2 ]; then \
		install -m 755 passt.avx2 $(DESTDIR)$(BINDIR)/passt.avx2; \
		ln -sf passt.avx2 $(DESTDIR)$(BINDIR)/pasta.avx2; \
	fi
	install -m 644 doc/passt.1 $(DESTDIR)$(MANDIR)/man1/passt.1
	ln -sf passt.1 $(DESTDIR)$(MANDIR)/man1/pasta.1

clean:
	rm -f passt pasta passt.avx2 pasta.avx2

# check is what CI runs (.ci/run): install the test dependencies, then
# formatting, vet, the package layering, unit tests and the integration
# tests.
check: test-setup all vet layers unit integration

test-setup:
	test/setup

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet ./...

# layers: which package may import which (doc/HACKING.md, "Layering"),
# checked over go list by test/layers.
layers:
	$(GO) test -count=1 ./test/layers

# unit: every package's own tests, test/streampeer's included (a program
# under test/ whose tests need no binaries).
unit:
	$(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/test$$' | grep -v '/test/') ./test/streampeer

# integration: the tests under test/ against the built binaries (test/layers
# and test/streampeer are the layers and unit targets': they take no -bin).
integration: all
	$(GO) test -count=1 -timeout 60m $$($(GO) list ./test/... | grep -v '/test/layers$$' | grep -v '/test/streampeer$$') -v -args -bin $(CURDIR) -peer gopasst

# bench: the full matrix (root; see bench/README.md), bench-quick the short
# profile. BENCH_FLAGS adds options, e.g. BENCH_FLAGS="-only gopasst,veth -tests tcp".
bench: all
	$(GO) run ./bench/cmd/bench -bin $(CURDIR) $(BENCH_FLAGS)

bench-quick: all
	$(GO) run ./bench/cmd/bench -bin $(CURDIR) -quick $(BENCH_FLAGS)
