-- Dead letters and their replay: `signal dlq list|replay` and the admin
-- endpoints, against a real engine, real Redis and the Amperity sandbox. A
-- payload dead-lettered because its stream did not exist is delivered once
-- the stream exists and the dead letter is replayed; an event the processor
-- cannot read at all is dead-lettered with its cause and acknowledged.
local H = require "helpers"
local K = require "fixtures.tasks.delivery_kit"
local queue = require "signal.redis.keys"

describe("dead letters", function()
  local sb, engine, redis

  setup(function()
    H.flush_redis()
    redis = H.redis()
    sb = H.sandbox(K.FIXTURE)
    engine = H.engine(K.config({
      dk_cli = { K.integ(sb, { event_stream_id = "esm-later" }) },
      dk_api = { K.integ(sb, { event_stream_id = "esm-later2" }), K.integ(sb, { name = "other" }) },
      dk_raw = { K.integ(sb) },
    }))
  end)

  teardown(function()
    if engine then engine:stop() end
    if sb then sb:stop() end
    if redis then redis:close() end
  end)

  before_each(function() K.reset(sb) end)

  local function dead_letters(pk, name)
    return H.eventually(function()
      local list = K.xrange(redis, queue.dlq(pk, name))
      return #list > 0 and list
    end, 10, "dead letters of " .. pk)
  end

  it("lists dead letters and replays them with `signal dlq`", function()
    local mids = K.send_many(engine, "dk_cli", 3)
    H.eventually(function() return #K.xrange(redis, queue.dlq("dk_cli", "amperity")) == 3 end, 10,
      "three dead letters")

    local out, code, err = K.dlq_cli(engine.config_path, "list", "--pipeline", "dk_cli")
    assert.equal(0, code, err)
    for _, m in ipairs(mids) do assert.matches(m:gsub("%-", "%%-"), out) end
    assert.matches("stream esm%-later not found for tenant acme", out)
    assert.matches("3 dead letters shown, 3 in total", out)
    assert.is_nil(out:find(K.fx.ingest_token, 1, true))

    local lim
    lim, code = K.dlq_cli(engine.config_path, "list", "--pipeline", "dk_cli", "--limit", "1")
    assert.equal(0, code)
    assert.matches("1 dead letter shown, 3 in total", lim)

    local _, bad = K.dlq_cli(engine.config_path, "list", "--pipeline", "nope")
    assert.equal(2, bad)

    -- the stream now exists: replay delivers every payload, attempts reset
    K.stream_mode(sb, "esm-later", "accept")
    out, code, err = K.dlq_cli(engine.config_path, "replay", "--pipeline", "dk_cli", "--integration", "amperity")
    assert.equal(0, code, err)
    assert.matches("replayed 3 dead letters of dk_cli/amperity", out)
    H.eventually(function()
      local by = K.by_mid(K.requests(sb, "esm-later"))
      for _, m in ipairs(mids) do
        local r = by[m]
        if not (r and #r == 2 and r[1].status == 404 and r[2].status == 202) then return false end
      end
      return true
    end, 10, "each payload refused once, then accepted after the replay")
    assert.equal(0, redis:call("XLEN", queue.dlq("dk_cli", "amperity")))
    -- the replayed attempt counts from 1 again
    local i = H.eventually(function()
      local x = K.live_integration(K.live_event(engine, "dk_cli", mids[1]), "amperity")
      return x and #x.requests == 2 and x
    end, 10, "the replayed attempt in the live event")
    assert.same({ 1, 1 }, { i.requests[1].attempt, i.requests[2].attempt })
    assert.same({ 404, 202 }, { i.requests[1].status, i.requests[2].status })
  end)

  it("lists and replays dead letters through the admin API, one integration at a time", function()
    local mid = K.send(engine, "dk_api")
    dead_letters("dk_api", "amperity")
    local res, body = K.admin(engine, "GET", "/v1/admin/dlq?pipeline=dk_api&integration=amperity")
    assert.equal(200, res.status)
    assert.equal(1, #body.entries)
    local e = body.entries[1]
    assert.equal(mid, e.message_id)
    assert.equal("dk_api", e.pipeline)
    assert.equal("amperity", e.integration)
    assert.equal("404", e.status)
    assert.equal(1, e.attempts)
    assert.matches("esm%-later2", e.error)
    assert.equal("DATAFLY", e.payload.source)
    assert.is_nil(res.body:find(K.fx.ingest_token, 1, true))
    -- the healthy integration of the same pipeline delivered and has none
    K.wait_delivered(sb, { mid }, "esm-demo")
    assert.equal(0, redis:call("XLEN", queue.dlq("dk_api", "other")))

    res = K.admin(engine, "POST", "/v1/admin/dlq/replay?pipeline=dk_api&integration=nope")
    assert.equal(400, res.status)

    K.stream_mode(sb, "esm-later2", "accept")
    local rbody
    res, rbody = K.admin(engine, "POST", "/v1/admin/dlq/replay?pipeline=dk_api&integration=amperity")
    assert.equal(200, res.status)
    assert.equal(1, rbody.replayed)
    K.wait_status(sb, { mid }, "esm-later2", 202)
    body = select(2, K.admin(engine, "GET", "/v1/admin/dlq?pipeline=dk_api"))
    assert.equal(0, #body.entries)
    -- the healthy integration was not sent the event again
    local by = K.by_mid(K.requests(sb, "esm-demo"))
    assert.equal(1, #by[mid])
  end)

  it("dead-letters an event it cannot read, with the cause, and acknowledges it", function()
    local raw = queue.raw("dk_raw")
    assert(redis:call("XADD", raw, "*", "ev", "{not json", "in", '{"event":"x"}'))
    local dl = H.eventually(function()
      local list = K.xrange(redis, queue.raw_dlq("dk_raw"))
      return #list > 0 and list[1]
    end, 10, "a processor dead letter")
    assert.matches("event is not valid JSON", dl.e)
    assert.equal("{not json", dl.ev)
    -- acknowledged and removed: nothing pending, nothing left in the raw stream
    H.eventually(function() return redis:call("XLEN", raw) == 0 end, 5, "raw stream drained")
    local pending = redis:call("XPENDING", raw, queue.RAW_GROUP)
    assert.equal(0, pending[1])
    -- visible to the CLI under the pseudo-integration _processor
    local out, code = K.dlq_cli(engine.config_path, "list", "--pipeline", "dk_raw", "--integration", "_processor")
    assert.equal(0, code)
    assert.matches("event is not valid JSON", out)
    -- and the pipeline keeps going
    local mid = K.send(engine, "dk_raw")
    K.wait_delivered(sb, { mid }, "esm-demo")
  end)
end)
