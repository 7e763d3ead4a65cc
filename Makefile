# Signal — build, test and demo entry points.
#   make          build bin/signal and the standalone Lua module
#   make deps     install missing Debian packages and npm dev dependencies
#   make lint     luacheck over every Lua file (.luacheckrc)
#   make test     deps + lint + build + C tests + busted specs + SDK tests (own Redis)
#   make run      the demo: private Redis, Amperity sandbox, engine, demo page
#   make bench    reproducible benchmarks (bench/README.md)

CC      ?= cc
PKGS     = luajit libevent libevent_pthreads libcurl hiredis libcrypto zlib
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-format-truncation -fno-strict-aliasing \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS     = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
# The standalone module resolves Lua symbols from the host luajit.
MODLIBS  = $(shell pkg-config --libs libevent libevent_pthreads libcurl hiredis libcrypto zlib 2>/dev/null) -lpthread

CORE_SRC = engine/l_core.c engine/l_buf.c engine/l_crypto.c engine/l_http.c engine/l_redis.c \
           engine/log.c engine/worker.c engine/server.c engine/http_parse.c engine/bytes.c \
           $(wildcard engine/collect/*.c)
HDRS     = $(wildcard engine/*.h engine/collect/*.h)

all: bin/signal build/lua/signal/core.so

bin/signal: engine/main.c $(CORE_SRC) $(HDRS)
	@mkdir -p bin
	$(CC) $(CFLAGS) -o $@ engine/main.c $(CORE_SRC) $(LIBS)

build/lua/signal/core.so: $(CORE_SRC) $(HDRS)
	@mkdir -p build/lua/signal
	$(CC) $(CFLAGS) -fPIC -shared -o $@ $(CORE_SRC) $(MODLIBS)

build/test_core: engine/tests/test_core.c $(CORE_SRC) $(HDRS)
	@mkdir -p build
	$(CC) $(CFLAGS) -Iengine -o $@ engine/tests/test_core.c $(CORE_SRC) $(LIBS)

# The HTTP parser alone: no server, no libraries.
build/test_http_parse: engine/tests/test_http_parse.c engine/http_parse.c engine/http_parse.h
	@mkdir -p build
	$(CC) $(CFLAGS) -Iengine -o $@ engine/tests/test_http_parse.c engine/http_parse.c

build/test_collect: engine/tests/test_collect.c $(CORE_SRC) $(HDRS)
	@mkdir -p build
	$(CC) $(CFLAGS) -Iengine -o $@ engine/tests/test_collect.c $(CORE_SRC) $(LIBS)

deps:
	@tools/deps.sh

C_TESTS  = build/test_core build/test_http_parse build/test_collect

lint: deps
	@luacheck --no-color -q .

test: lint all $(C_TESTS)
	@tools/test.sh

check-memory: all $(C_TESTS) build/signal-asan
	@tools/check-memory.sh

run: deps all
	@tools/run-demo.sh

bench: deps all
	@bench/run.sh

clean:
	rm -rf bin build

.PHONY: all deps lint test check-memory run bench clean

# AddressSanitizer build of the engine, for tools/check-memory.sh.
build/signal-asan: engine/main.c $(CORE_SRC) $(HDRS)
	@mkdir -p build
	$(CC) $(CFLAGS) -O1 -fsanitize=address -fno-omit-frame-pointer -o $@ engine/main.c $(CORE_SRC) $(LIBS)

# LuaRocks (signal-1.8.0-1.rockspec): the standalone module, the Lua runtime,
# presets and the SDK.
rock: build/lua/signal/core.so

install-rock: rock
	@test -n "$(INST_LUADIR)" -a -n "$(INST_LIBDIR)" || { echo "INST_LUADIR/INST_LIBDIR not set"; exit 1; }
	mkdir -p $(INST_LUADIR)/signal $(INST_LIBDIR)/signal
	cp -r lua/signal/. $(INST_LUADIR)/signal/
	mkdir -p $(INST_LUADIR)/signal/presets $(INST_LUADIR)/signal/sdk
	cp -r presets/. $(INST_LUADIR)/signal/presets/
	cp sdk/datafly.js $(INST_LUADIR)/signal/sdk/
	mkdir -p $(INST_LUADIR)/signal/spec/fixtures/events
	cp spec/fixtures/events/*.lua $(INST_LUADIR)/signal/spec/fixtures/events/
	cp build/lua/signal/core.so $(INST_LIBDIR)/signal/core.so

.PHONY: rock install-rock

# Regenerates the configuration reference (docs/configuration.md) from the schemas.
docs:
	luajit tools/config-reference.lua --write docs/configuration.md

.PHONY: docs
