-- The rockspec installs a working Lua side: `luarocks make` against LuaJIT
-- into a scratch tree, then a customer-style script maps an event through
-- signal.testing from that tree alone (no repository paths).
local H = require "helpers"

describe("signal-1.8.0-1.rockspec", function()
  it("installs the runtime, presets and standalone module with luarocks make", function()
    local tree = H.tmp .. "/rocktree"
    os.execute("rm -rf " .. tree)
    local ok = H.sh_ok("cd " .. H.root .. " && luarocks --lua-version=5.1 --tree=" .. tree ..
      " make signal-1.8.0-1.rockspec LUA_INCDIR=/usr/include/luajit-2.1 >" .. H.tmp .. "/rock.log 2>&1")
    assert.is_true(ok, H.read(H.tmp .. "/rock.log"))
    local script = H.write(H.tmp .. "/rock_check.lua", [[
      package.path = "]] .. tree .. [[/share/lua/5.1/?.lua;]] .. tree .. [[/share/lua/5.1/?/init.lua;" .. package.path
      package.cpath = "]] .. tree .. [[/lib/lua/5.1/?.so;" .. package.cpath
      local T = require "signal.testing"
      local p = T.map { preset = "retail", event = T.fixture("retail"), source_value = "DATAFLY" }
      io.write(p.source, " ", p.type, " ", require("signal.core").sha256_hex("abc"):sub(1, 8))
    ]])
    local f = io.popen("cd / && env -u SIGNAL_HOME luajit " .. script .. " 2>&1")
    local out = f:read("*a")
    f:close()
    assert.equal("DATAFLY purchase ba7816bf", out)
  end)
end)
