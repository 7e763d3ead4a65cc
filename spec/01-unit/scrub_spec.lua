-- spec/01-unit/scrub_spec.lua — what never leaves Signal in a log line or a
-- live event: registered secrets, bearer tokens and anything shaped like a
-- JWT, wherever it sits in the text.
local log = require "signal.observe.log"
local live = require "signal.observe.live"

local JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEyMyIsInNjb3BlIjoiYWRtaW4ifQ.c2lnbmF0dXJlLWJ5dGVz"

describe("scrubbing", function()
  it("redacts a JWT a page put in an event property, in logs and in live events", function()
    local ev = '{"properties":{"session_token":"' .. JWT .. '","sku":"A-1"}}'
    for _, scrub in ipairs({ log.scrub, live.scrub }) do
      local out = scrub(ev)
      assert.is_nil(out:find(JWT, 1, true))
      assert.is_nil(out:find("eyJzdWIiOiJ1LTEyMyIs", 1, true))
      assert.truthy(out:find('"sku":"A-1"', 1, true))
    end
  end)

  it("redacts bearer tokens and leaves ordinary text alone", function()
    assert.equal("Authorization: Bearer [REDACTED]", log.scrub("Authorization: Bearer abc.def-123"))
    local plain = '{"event":"Order Completed","eyJ":"not a token"}'
    assert.equal(plain, live.scrub(plain))
  end)
end)
