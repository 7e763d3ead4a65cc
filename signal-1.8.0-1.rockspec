-- LuaRocks spec for Signal's Lua side: the runtime (lua/signal), the
-- Amperity presets, datafly.js and the standalone signal.core C module
-- (blocking primitives), so customers can `require "signal.testing"` in their
-- own busted specs. The engine binary is built with `make` (see README).
--   luarocks --lua-version=5.1 make signal-1.8.0-1.rockspec \
--     LUA_INCDIR=/usr/include/luajit-2.1
rockspec_format = "3.0"
package = "signal"
version = "1.8.0-1"
source = { url = "git+file://." }
description = {
  summary = "Server-side event pipeline engine: Amperity enrichment and delivery, Lua blueprints",
  license = "Proprietary",
}
dependencies = { "lua >= 5.1, < 5.2" }   -- LuaJIT; lua-cjson comes from Debian's lua-cjson
-- libcurl lives under a multiarch include dir on Debian; pkg-config finds it.
external_dependencies = {
  LIBEVENT = { header = "event2/event.h" },
  HIREDIS = { header = "hiredis/hiredis.h" },
  OPENSSL = { header = "openssl/evp.h" },
}
build = {
  type = "make",
  build_target = "rock",
  build_variables = { CFLAGS = "$(CFLAGS)", LUA_INCDIR = "$(LUA_INCDIR)" },
  install_target = "install-rock",
  install_variables = { INST_LUADIR = "$(LUADIR)", INST_LIBDIR = "$(LIBDIR)" },
}
