-- No runtime module assigns a global: a missing `local` would share state
-- between requests (a Set-Cookie of one visitor answered to the next, as a
-- dropped declaration once did in the collector). LuaJIT's bytecode listing
-- shows every global write as GSET.
describe("lua/signal modules", function()
  it("never assign globals", function()
    local files = {}
    local p = io.popen("find lua -name '*.lua' | sort")
    for f in p:lines() do files[#files + 1] = f end
    p:close()
    assert.is_true(#files > 30)
    local offenders = {}
    for _, f in ipairs(files) do
      local l = io.popen("luajit -bl " .. f .. " 2>&1")
      local listing = l:read("*a")
      l:close()
      assert.matches("BYTECODE", listing, f)   -- it compiled
      for name in listing:gmatch('GSET[^\n]-; "([^"]+)"') do
        offenders[#offenders + 1] = f .. ": " .. name
      end
    end
    assert.same({}, offenders)
  end)
end)
