-- spec/01-unit/docs_spec.lua — the docs name only what exists: every
-- environment variable they mention is read by some code, and every
-- `section.key` config path they mention is a field of the schema.
local fields = require "signal.config.fields"

local function read(p)
  local f = assert(io.open(p))
  local s = f:read("*a")
  f:close()
  return s
end

local function lines(cmd)
  local f = assert(io.popen(cmd))
  local out = {}
  for l in f:lines() do out[#out + 1] = l end
  f:close()
  return out
end

local DOCS = lines("ls README.md docs/*.md docs/destinations/*.md sdk/README.md engine/API.md")

-- every file the engine, its tools, the demo and the specs are made of
local CODE = table.concat(lines("git ls-files engine lua tools examples bench spec sdk/datafly.js"
  .. " | grep -vE '\\.md$' | xargs cat"), "\n")

describe("the docs", function()
  it("name only environment variables that some code reads", function()
    local missing = {}
    for _, doc in ipairs(DOCS) do
      for name in read(doc):gmatch("%f[%w_](SIGNAL_[%u%d_]+)") do
        if not CODE:find(name, 1, true) then missing[#missing + 1] = doc .. ": " .. name end
      end
      for name in read(doc):gmatch("%f[%w_]((%u[%u%d]*_[%u%d_]+))%f[^%w_]") do
        if (name:find("^SANDBOX_") or name:find("^DEMO_") or name:find("^IDENTITY_HUB_"))
           and not CODE:find(name, 1, true) then
          missing[#missing + 1] = doc .. ": " .. name
        end
      end
    end
    assert.same({}, missing)
  end)

  it("name only config paths that the schema has", function()
    local records = {}
    for _, f in ipairs(fields.schema.fields) do
      if f.type == "record" then
        local set = {}
        for _, sub in ipairs(f.fields) do set[sub.name] = true end
        records[f.name] = set
      end
    end
    local unknown, seen = {}, 0
    for _, doc in ipairs(DOCS) do
      for section, key in read(doc):gmatch("`([%l_]+)%.([%l_]+)`") do
        if records[section] then
          seen = seen + 1
          if not records[section][key] then unknown[#unknown + 1] = doc .. ": " .. section .. "." .. key end
        end
      end
    end
    assert.same({}, unknown)
    assert.is_true(seen > 5, "the docs name config paths like `delivery.claim_idle_ms`")
  end)
end)
