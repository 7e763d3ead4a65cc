-- Segment client compatibility: real SDK code, unchanged, pointed at a
-- `signal run` engine. The node script (spec/compat/segment_node.mjs) uses
-- @segment/analytics-node from node_modules; this spec checks what reached
-- the raw stream of the writeKey's pipeline.
local H = require "helpers"
local core = require "signal.core"

local PK, OTHER = "dk_compat_node", "dk_compat_other"

describe("Segment client compatibility", function()
  local E

  setup(function()
    H.park_processor(PK)
    H.park_processor(OTHER)
    E = H.engine({ pipelines = { { key = PK }, { key = OTHER } } })
  end)

  teardown(function()
    if E then E:stop() end
  end)

  it("@segment/analytics-node delivers a batch (identify + track) to the writeKey's pipeline", function()
    assert.is_true(H.sh_ok("command -v node >/dev/null"), "node is not installed")
    assert.is_true(H.sh_ok("test -d " .. H.root .. "/node_modules/@segment/analytics-node"),
                   "@segment/analytics-node is missing: run `npm ci`")
    H.clear_raw(PK)
    local run = core.random_hex(6)
    local f = io.popen("node " .. H.root .. "/spec/compat/segment_node.mjs " .. H.sh_quote(E.url) .. " " .. PK
                       .. " " .. run .. " 2>&1; echo \"exit=$?\"")
    local out = f:read("*a")
    f:close()
    assert.matches("exit=0", out, out)
    assert.matches('"statuses":%[200%]', out)

    local entries = H.raw_entries(PK)
    assert.equal(2, #entries)
    local identify, track = entries[1].ev, entries[2].ev
    assert.equal("identify", identify.type)
    assert.equal("node-user-" .. run, identify.user_id)
    assert.equal("node-" .. run .. "@example.com", identify.traits.email)
    assert.equal("track", track.type)
    assert.equal("Order Completed", track.event)
    assert.equal(42.5, track.properties.revenue)
    for _, e in ipairs(entries) do
      assert.equal(PK, e.ev.pipeline_key)
      assert.matches("^node%-next%-", e.ev.message_id)
      assert.equal("@segment/analytics-node", e.ev.context.library.name)
      -- a server SDK: no cookie identity, and its credentials are not stored
      assert.is_nil(e.ev.canonical_id)
      assert.is_nil(e.input.writeKey)
    end
    assert.equal(0, #H.raw_entries(OTHER))
  end)
end)
