-- The docs stay true: the configuration reference is exactly what the
-- schemas generate (tools/config-reference.lua; `make docs` refreshes it),
-- and the README's quickstart is the two commands.
describe("README.md and docs/configuration.md", function()
  local function read(p)
    local f = assert(io.open(p))
    local s = f:read("*a")
    f:close()
    return s
  end

  it("carries the configuration reference generated from the schemas", function()
    local f = io.popen("luajit tools/config-reference.lua")
    local generated = f:read("*a"):gsub("\n$", "")
    f:close()
    assert.truthy(generated:find("event_stream_id", 1, true))
    assert.truthy(read("docs/configuration.md"):find(generated, 1, true),
      "docs/configuration.md is out of date: run `make docs`")
  end)

  it("starts with the two-command quickstart", function()
    local readme = read("README.md")
    local quick = readme:match("## Quickstart(.-)\n## ")
    assert.truthy(quick and quick:find("make run", 1, true) and quick:find("make test", 1, true))
  end)
end)
