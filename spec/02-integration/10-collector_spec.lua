-- The collector (engine/collect) driven for real: `signal run` engines on
-- free ports against the private test Redis. Every acceptance is checked in
-- the pipeline's raw stream (XRANGE), not only by status code; the
-- processor's consumer group is parked (H.park_processor) so the stream
-- holds exactly what the collector stored. Each rule is exercised through
-- every route that applies it: one event, a batch, /v1/events.
local H = require "helpers"
local cjson = require "cjson"
local core = require "signal.core"
local queue = require "signal.redis.keys"
local stitch = require "signal.pipeline.stitch"
local collector = require "signal.collect"

local PK_A, PK_B = "dk_col_a", "dk_col_b"
local ORIGIN_A, ORIGIN_B = "https://www.example.com", "https://shop.example.org"

local function pipelines()
  return {
    { key = PK_A, origins = { ORIGIN_A } },
    { key = PK_B, origins = { ORIGIN_B } },
  }
end

local function uid() return "m-" .. core.random_hex(8) end

local post = H.post   -- JSON body, application/json unless the headers say otherwise

local function basic(key)
  local b64 = assert(io.popen("printf '%s' " .. H.sh_quote(key .. ":") .. " | base64 -w0")):read("*a")
  return "Basic " .. b64
end

local function gzip(s)
  local f = H.tmp .. "/gz-" .. core.random_hex(4)
  H.write(f, s)
  assert(H.sh_ok("gzip -f " .. f))
  return assert(H.read(f .. ".gz"))
end

local function err_of(res) return H.json(res).error end

local LIMITS = core.collect.limits

local function track(extra)
  local m = { type = "track", event = "Product Viewed", anonymousId = "anon-1", messageId = uid(),
              properties = { product_id = "p1" } }
  for k, v in pairs(extra or {}) do m[k] = v end
  return m
end

-- a batch body of exactly `size` bytes, its messages padded; pad_last: the
-- last message's own size instead, when given
local function batch_of(size, n, pad_last)
  local batch = {}
  for i = 1, n do batch[i] = track({ properties = { pad = "" } }) end
  local function body() return cjson.encode({ batch = batch }) end
  if pad_last then
    local m = batch[n]
    m.properties.pad = string.rep("z", pad_last - #cjson.encode(m))
    assert(#cjson.encode(m) == pad_last)
    return body()
  end
  local per = math.floor((size - #body()) / n)
  for i = 1, n do batch[i].properties.pad = string.rep("y", per) end
  batch[n].properties.pad = batch[n].properties.pad .. string.rep("y", size - #body())
  local b = body()
  assert(#b == size, #b)
  return b
end

describe("collector", function()
  local A, B

  setup(function()
    H.flush_redis()
    H.park_processor(PK_A)
    H.park_processor(PK_B)
    -- A: the peer (127.0.0.1) is a trusted proxy, like a collector behind nginx
    A = H.engine({ pipelines = pipelines(), trusted_proxies = { "127.0.0.1", "10.0.0.0/8" } })
    -- B: the peer is NOT trusted; a cookie domain; dedupe off
    B = H.engine({ pipelines = pipelines(), trusted_proxies = { "10.0.0.0/8" },
                   cookie_domain = "example.com", dedupe_ttl_s = 0 })
  end)

  teardown(function()
    if A then A:stop() end
    if B then B:stop() end
  end)

  before_each(function()
    H.clear_raw(PK_A)
    H.clear_raw(PK_B)
  end)

  describe("endpoints", function()
    it("stores one event per datafly.js / analytics.js path with the type the path implies", function()
      local cases = {
        { "/v1/t", { event = "Signed Up" }, "track" },
        { "/v1/p", { name = "Home" }, "page" },
        { "/v1/i", { traits = { plan = "pro" } }, "identify" },
        { "/v1/g", { groupId = "g1" }, "group" },
        { "/v1/s", { name = "Cart" }, "screen" },
        { "/v1/a", { previousId = "old-id" }, "alias" },
      }
      local ids = {}
      for i, c in ipairs(cases) do
        local m = c[2]
        m.anonymousId = "anon-1"
        m.messageId = uid()
        ids[i] = m.messageId
        local res = post(A, c[1], m, { ["X-Pipeline-Key"] = PK_A })
        assert.equal(200, res.status, c[1] .. ": " .. res.body)
        assert.same({ success = true }, H.json(res))
      end
      local entries = H.raw_entries(PK_A)
      assert.equal(#cases, #entries)
      for i, c in ipairs(cases) do
        assert.equal(c[3], entries[i].ev.type, c[1])
        assert.equal(ids[i], entries[i].ev.message_id)
        assert.equal(PK_A, entries[i].ev.pipeline_key)
      end
      assert.equal("Signed Up", entries[1].ev.event)
      assert.equal("g1", entries[4].ev.group_id)
      assert.equal("old-id", entries[6].ev.previous_id)
    end)

    it("stores events sent to the Segment HTTP Tracking API paths", function()
      local paths = { track = { event = "Order Completed" }, page = { name = "Home" },
                      screen = { name = "Cart" }, identify = { traits = { email = "a@example.com" } },
                      group = { groupId = "g1" }, alias = { previousId = "p0" } }
      local order = { "track", "page", "screen", "identify", "group", "alias" }
      for _, t in ipairs(order) do
        local m = paths[t]
        m.userId = "u-1"
        local res = post(A, "/v1/" .. t, m, { Authorization = basic(PK_A) })
        assert.equal(200, res.status, t .. ": " .. res.body)
      end
      local entries = H.raw_entries(PK_A)
      assert.equal(#order, #entries)
      for i, t in ipairs(order) do
        assert.equal(t, entries[i].ev.type)
        assert.equal("u-1", entries[i].ev.user_id)
      end
    end)

    it("answers other methods on its paths with 405", function()
      for _, path in ipairs({ "/v1/t", "/v1/batch", "/v1/events", "/v1/identify" }) do
        local res = assert(H.request("GET", A.url .. path))
        assert.equal(405, res.status, path)
        assert.equal("METHOD_NOT_ALLOWED", err_of(res).code)
        assert.equal("GET is not supported on " .. path, err_of(res).message)
      end
    end)

    it("refuses an event whose type disagrees with its path", function()
      local res = post(A, "/v1/p", track(), { ["X-Pipeline-Key"] = PK_A })
      assert.equal(400, res.status)
      assert.equal("INVALID_EVENT", err_of(res).code)
      assert.matches("does not match the endpoint", err_of(res).message)
      assert.equal(0, #H.raw_entries(PK_A))
    end)

    it("stores every message of /v1/batch and /v1/b, applying the batch's context and sentAt", function()
      for _, path in ipairs({ "/v1/batch", "/v1/b" }) do
        H.clear_raw(PK_A)
        local body = {
          batch = {
            track({ context = { locale = "fr-FR" } }),
            { type = "identify", userId = "u-9", traits = { plan = "pro" }, messageId = uid() },
            { type = "page", anonymousId = "anon-1", name = "Home", messageId = uid(),
              originalTimestamp = "2026-04-17T10:00:00.000Z" },
          },
          context = { library = { name = "batch-lib", version = "1.0" }, locale = "en-GB" },
          sentAt = "2026-04-17T10:00:01.000Z",
          writeKey = PK_A,
        }
        local res = post(A, path, body, { ["Content-Type"] = "text/plain" })
        assert.equal(200, res.status, path .. ": " .. res.body)
        local entries = H.raw_entries(PK_A)
        assert.equal(3, #entries, path)
        assert.same({ "track", "identify", "page" },
                    { entries[1].ev.type, entries[2].ev.type, entries[3].ev.type })
        -- the batch context fills in; a message's own context values win
        assert.equal("batch-lib", entries[1].ev.context.library.name)
        assert.equal("fr-FR", entries[1].ev.context.locale)
        assert.equal("en-GB", entries[2].ev.context.locale)
        assert.equal("2026-04-17T10:00:01.000Z", entries[3].ev.sent_at)
        -- `in` is the message as sent, without the batch's additions
        assert.is_nil(entries[1].input.context.library)
      end
    end)

    it("takes one event or a batch on the server-side /v1/events", function()
      local res = post(A, "/v1/events", { type = "track", event = "Server Event", userId = "u-1",
                                          messageId = uid() }, { ["X-Pipeline-Key"] = PK_A })
      assert.equal(200, res.status, res.body)
      res = post(A, "/v1/events", { batch = { { type = "identify", userId = "u-2", messageId = uid() },
                                              { type = "track", event = "E2", userId = "u-2", messageId = uid() } } },
                 { ["X-Pipeline-Key"] = PK_A })
      assert.equal(200, res.status, res.body)
      local entries = H.raw_entries(PK_A)
      assert.equal(3, #entries)
      assert.equal("Server Event", entries[1].ev.event)
      assert.equal("identify", entries[2].ev.type)
      assert.equal("E2", entries[3].ev.event)
      -- /v1/events has no path type: one is required
      res = post(A, "/v1/events", { event = "x", userId = "u" }, { ["X-Pipeline-Key"] = PK_A })
      assert.equal(400, res.status)
      assert.matches("type: is required", err_of(res).message)
    end)
  end)

  describe("pipeline key", function()
    it("is read from X-Pipeline-Key, body pipelineKey, body writeKey and the Basic username", function()
      local forms = {
        { headers = { ["X-Pipeline-Key"] = PK_B }, body = {} },
        { headers = {}, body = { pipelineKey = PK_B } },
        { headers = {}, body = { writeKey = PK_B } },
        { headers = { Authorization = basic(PK_B) }, body = {} },
      }
      for i, f in ipairs(forms) do
        local m = track({ event = "form " .. i })
        for k, v in pairs(f.body) do m[k] = v end
        local res = post(A, "/v1/t", m, f.headers)
        assert.equal(200, res.status, "form " .. i .. ": " .. res.body)
      end
      local entries = H.raw_entries(PK_B)
      assert.equal(4, #entries)
      for i, e in ipairs(entries) do
        assert.equal("form " .. i, e.ev.event)
        assert.equal(PK_B, e.ev.pipeline_key)
        -- credentials never reach the stored input
        assert.is_nil(e.input.writeKey)
        assert.is_nil(e.input.pipelineKey)
      end
      assert.equal(0, #H.raw_entries(PK_A))
    end)

    it("answers 401 saying where a key can be given when none is", function()
      local res = post(A, "/v1/t", track())
      assert.equal(401, res.status)
      local e = err_of(res)
      assert.equal("INVALID_PIPELINE_KEY", e.code)
      assert.matches("X%-Pipeline%-Key", e.message)
      assert.matches("writeKey", e.message)
      assert.matches("pipelineKey", e.message)
      assert.matches("Basic", e.message)
    end)

    it("lets a page of a configured origin read the 401 (no opaque CORS failure)", function()
      local res = post(A, "/v1/t", track({ writeKey = "dk_typo" }), { Origin = ORIGIN_B })
      assert.equal(401, res.status)
      assert.equal(ORIGIN_B, res.headers["access-control-allow-origin"])
      res = post(A, "/v1/t", track({ writeKey = "dk_typo" }), { Origin = "https://evil.example.net" })
      assert.is_nil(res.headers["access-control-allow-origin"])
    end)

    it("answers 401 for an unknown key without echoing it, and stores nothing", function()
      local secret = "dk_live_" .. core.random_hex(8)
      for _, headers in ipairs({ { ["X-Pipeline-Key"] = secret }, { Authorization = basic(secret) } }) do
        local res = post(A, "/v1/t", track(), headers)
        assert.equal(401, res.status)
        assert.equal("INVALID_PIPELINE_KEY", err_of(res).code)
        assert.is_nil(res.body:find(secret, 1, true))
      end
      local res = post(A, "/v1/batch", { batch = { track() }, writeKey = secret })
      assert.equal(401, res.status)
      assert.is_nil(res.body:find(secret, 1, true))
      assert.equal(0, #H.raw_entries(PK_A) + #H.raw_entries(PK_B))
    end)
  end)

  describe("bodies", function()
    it("accepts the analytics.js form: text/plain to /v1/t with writeKey in the body", function()
      local m = { type = "track", event = "Clicked", properties = { x = 1 }, anonymousId = "ajs-anon",
                  messageId = "ajs-next-" .. uid(), writeKey = PK_A, sentAt = "2026-04-17T15:37:10.684Z",
                  context = { library = { name = "analytics.js", version = "next-1.70.0" },
                              page = { path = "/p", url = "https://www.example.com/p" } },
                  integrations = {}, _metadata = { bundled = {}, unbundled = {} } }
      local res = post(A, "/v1/t", m, { ["Content-Type"] = "text/plain;charset=UTF-8", Origin = ORIGIN_A })
      assert.equal(200, res.status, res.body)
      local e = H.raw_entries(PK_A)[1]
      assert.equal("Clicked", e.ev.event)
      assert.equal("/p", e.ev.context.page.path)
      assert.equal("analytics.js", e.ev.context.library.name)
      assert.is_nil(e.input.writeKey)
      assert.equal(m.messageId, e.input.messageId)
      assert.same(m.context, e.input.context)
    end)

    it("keeps the input byte for byte when the body carries no key", function()
      local body = '{"type":"track","event":"Raw","anonymousId":"a","messageId":"' .. uid() .. '",  "n":1.5}'
      assert.equal(200, post(A, "/v1/t", body, { ["X-Pipeline-Key"] = PK_A }).status)
      assert.equal(body, H.raw_entries(PK_A)[1].in_json)
    end)

    it("decompresses Content-Encoding: gzip bodies (RudderStack's default)", function()
      local body = cjson.encode({ batch = { track({ event = "Gzipped" }) } })
      local res = post(A, "/v1/batch", gzip(body), { Authorization = basic(PK_A), ["Content-Encoding"] = "gzip" })
      assert.equal(200, res.status, res.body)
      assert.equal("Gzipped", H.raw_entries(PK_A)[1].ev.event)
      res = post(A, "/v1/t", "this is not gzip", { ["X-Pipeline-Key"] = PK_A, ["Content-Encoding"] = "gzip" })
      assert.equal(400, res.status)
      assert.equal("INVALID_BODY", err_of(res).code)
    end)

    it("answers 400 INVALID_JSON with the decoder's reason", function()
      local res = post(A, "/v1/t", '{"type":"track",', { ["X-Pipeline-Key"] = PK_A })
      assert.equal(400, res.status)
      local e = err_of(res)
      assert.equal("INVALID_JSON", e.code)
      assert.matches("character %d+", e.message)
      res = post(A, "/v1/t", "", { ["X-Pipeline-Key"] = PK_A })
      assert.equal("INVALID_JSON", err_of(res).code)
      assert.matches("empty", err_of(res).message)
    end)

    it("refuses JSON nested deeper than the limit", function()
      local deep = string.rep("[", collector.MAX_DEPTH + 5) .. string.rep("]", collector.MAX_DEPTH + 5)
      local body = '{"type":"track","event":"x","anonymousId":"a","properties":{"deep":' .. deep .. '}}'
      local res = post(A, "/v1/t", body, { ["X-Pipeline-Key"] = PK_A })
      assert.equal(400, res.status)
      assert.equal("INVALID_JSON", err_of(res).code)
      assert.matches("nested", err_of(res).message)
      -- within the limit is fine
      local ok = string.rep("[", 10) .. string.rep("]", 10)
      body = '{"type":"track","event":"x","anonymousId":"a","properties":{"deep":' .. ok .. '}}'
      assert.equal(200, post(A, "/v1/t", body, { ["X-Pipeline-Key"] = PK_A }).status)
    end)
  end)

  describe("limits", function()
    it("takes a body of exactly 500 KB and refuses one byte more, naming the limit", function()
      assert.equal(512000, LIMITS.max_body)
      local res = post(A, "/v1/batch", batch_of(512000, 20), { ["X-Pipeline-Key"] = PK_A })
      assert.equal(200, res.status, res.body)
      assert.equal(20, #H.raw_entries(PK_A))
      H.clear_raw(PK_A)
      res = post(A, "/v1/batch", batch_of(512001, 20), { ["X-Pipeline-Key"] = PK_A })
      assert.equal(413, res.status)
      assert.equal("request body is 512001 bytes; the limit is 500 KB (512000 bytes) per request", err_of(res).message)
      assert.equal(0, #H.raw_entries(PK_A))
    end)

    it("takes a message of exactly 32 KB and refuses one byte more, in a batch and alone", function()
      assert.equal(32768, LIMITS.max_message)
      local res = post(A, "/v1/batch", batch_of(nil, 3, 32768), { ["X-Pipeline-Key"] = PK_A })
      assert.equal(200, res.status, res.body)
      assert.equal(3, #H.raw_entries(PK_A))
      res = post(A, "/v1/batch", batch_of(nil, 3, 32769), { ["X-Pipeline-Key"] = PK_A })
      assert.equal(413, res.status)
      assert.equal("message 2 of the batch is over the limit of 32 KB (32768 bytes) per message; nothing was accepted",
                   err_of(res).message)
      assert.same({ { index = 2, reason = "message is 32769 bytes; the limit is 32 KB (32768 bytes)" } },
                  err_of(res).details)
      local m = track()
      m.properties.pad = ""
      m.properties.pad = string.rep("w", 32769 - #cjson.encode(m))
      res = post(A, "/v1/t", m, { ["X-Pipeline-Key"] = PK_A })
      assert.equal(413, res.status)
      assert.equal("the event is 32769 bytes; the limit is 32 KB (32768 bytes) per message", err_of(res).message)
      assert.equal(3, #H.raw_entries(PK_A))
    end)

    it("answers 413 for a body over 500 KB, naming the limit", function()
      local m = track({ properties = { pad = string.rep("x", 520 * 1024) } })
      local res = post(A, "/v1/batch", { batch = { m } }, { ["X-Pipeline-Key"] = PK_A })
      assert.equal(413, res.status)
      assert.equal("PAYLOAD_TOO_LARGE", err_of(res).code)
      assert.matches("500 KB", err_of(res).message)
      assert.equal(0, #H.raw_entries(PK_A))
    end)

    it("answers 413 for a gzip body that inflates past 500 KB (a gzip bomb)", function()
      local m = track({ properties = { pad = string.rep("0", 4 * 1024 * 1024) } })
      local z = gzip(cjson.encode(m))
      assert.is_true(#z < 100 * 1024)
      local res = post(A, "/v1/t", z, { ["X-Pipeline-Key"] = PK_A, ["Content-Encoding"] = "gzip" })
      assert.equal(413, res.status)
      assert.equal("PAYLOAD_TOO_LARGE", err_of(res).code)
      assert.matches("decompressed", err_of(res).message)
    end)

    it("answers 413 for a message over 32 KB, naming its index, and stores none of the batch", function()
      local batch = { track(), track(), track({ properties = { pad = string.rep("y", 33 * 1024) } }), track() }
      local res = post(A, "/v1/batch", { batch = batch }, { ["X-Pipeline-Key"] = PK_A })
      assert.equal(413, res.status)
      local e = err_of(res)
      assert.equal("PAYLOAD_TOO_LARGE", e.code)
      assert.matches("32 KB", e.message)
      assert.equal(1, #e.details)
      assert.equal(2, e.details[1].index)
      assert.equal(0, #H.raw_entries(PK_A))
      -- a single event too
      res = post(A, "/v1/t", track({ properties = { pad = string.rep("y", 33 * 1024) } }), { ["X-Pipeline-Key"] = PK_A })
      assert.equal(413, res.status)
      assert.matches("32 KB", err_of(res).message)
    end)
  end)

  describe("validation", function()
    it("rejects a whole batch listing every bad index with its reason", function()
      local batch = {
        track(),
        { type = "track", anonymousId = "a" },                      -- no event
        track(),
        { type = "identify", traits = { email = "x@example.com" } }, -- no identity (server: no cookie)
        "not an object",
        track({ timestamp = "yesterday" }),
      }
      local res = post(A, "/v1/batch", { batch = batch }, { Authorization = basic(PK_A) })
      assert.equal(400, res.status)
      local e = err_of(res)
      assert.equal("INVALID_BATCH", e.code)
      local idx = {}
      for i, d in ipairs(e.details) do idx[i] = d.index end
      assert.same({ 1, 3, 4, 5 }, idx)
      assert.matches("event", e.details[1].reason)
      assert.matches("userId or anonymousId", e.details[2].reason)
      assert.matches("object", e.details[3].reason)
      assert.matches("ISO%-8601", e.details[4].reason)
      assert.equal(0, #H.raw_entries(PK_A))
    end)

    it("rejects a single invalid event with INVALID_EVENT and its reasons", function()
      local res = post(A, "/v1/t", { anonymousId = "a", timestamp = "nope" }, { ["X-Pipeline-Key"] = PK_A })
      assert.equal(400, res.status)
      local e = err_of(res)
      assert.equal("INVALID_EVENT", e.code)
      assert.matches("event", e.message)
      assert.matches("ISO%-8601", e.message)
      assert.equal(2, #e.details)
      assert.equal(0, #H.raw_entries(PK_A))
    end)

    it("rejects a message holding a number JSON cannot store (1e999 decodes to infinity)", function()
      local body = '{"batch":[{"type":"track","event":"ok","anonymousId":"a"},'
        .. '{"type":"track","event":"x","anonymousId":"a","properties":{"n":1e999}}]}'
      local res = post(A, "/v1/batch", body, { ["X-Pipeline-Key"] = PK_A })
      assert.equal(400, res.status)
      local e = err_of(res)
      assert.equal("INVALID_BATCH", e.code)
      assert.equal(1, #e.details)
      assert.equal(1, e.details[1].index)
      assert.matches("cannot be stored", e.details[1].reason)
      assert.equal(0, #H.raw_entries(PK_A))
    end)

    it("refuses a batch body without a batch array", function()
      for _, body in ipairs({ { batch = {} }, { batch = { a = 1 } }, { events = { track() } } }) do
        local res = post(A, "/v1/batch", body, { ["X-Pipeline-Key"] = PK_A })
        assert.equal(400, res.status)
        assert.equal("INVALID_BATCH", err_of(res).code)
      end
    end)
  end)

  describe("dedupe", function()
    it("acknowledges a repeated messageId but stores it once", function()
      local m = track()
      assert.equal(200, post(A, "/v1/t", m, { ["X-Pipeline-Key"] = PK_A }).status)
      local again = post(A, "/v1/t", m, { ["X-Pipeline-Key"] = PK_A })
      assert.equal(200, again.status)
      assert.same({ success = true }, H.json(again))
      -- the same id inside a later batch, next to a new one
      local fresh = track()
      assert.equal(200, post(A, "/v1/batch", { batch = { m, fresh, fresh } }, { ["X-Pipeline-Key"] = PK_A }).status)
      local entries = H.raw_entries(PK_A)
      assert.equal(2, #entries)
      assert.equal(m.messageId, entries[1].ev.message_id)
      assert.equal(fresh.messageId, entries[2].ev.message_id)
    end)

    it("keeps the id in the dedupe window of dedupe_ttl_s, per pipeline", function()
      local m = track()
      assert.equal(200, post(A, "/v1/t", m, { ["X-Pipeline-Key"] = PK_A }).status)
      -- the window hash lives until the end of the window after next
      local key, ttl = H.dedupe_marker(PK_A, m.messageId)
      assert.is_truthy(key)
      assert.is_true(ttl > 2 * 86400 - 5 and ttl <= 3 * 86400)
      assert.is_nil(H.dedupe_marker(PK_B, m.messageId))
      -- another pipeline has its own window
      assert.equal(200, post(A, "/v1/t", m, { ["X-Pipeline-Key"] = PK_B }).status)
      assert.equal(1, #H.raw_entries(PK_B))
    end)

    it("remembers an id for at least dedupe_ttl_s and at most twice that, on every path", function()
      -- real time, a 1 s window: stored, deduped at once, stored again two
      -- windows later; the window two back is unlinked by then
      local C = H.engine({ pipelines = pipelines(), dedupe_ttl_s = 1 })
      finally(function() C:stop() end)
      local function window() return math.floor(core.now()) end
      local single, listed, big = track(), track(), {}
      local BIG = LIMITS.group_max + 1              -- a group commit of its own
      for i = 1, BIG do big[i] = track() end
      local function send_all()
        local w = window()
        assert.equal(200, post(C, "/v1/t", single, { ["X-Pipeline-Key"] = PK_A }).status)
        assert.equal(200, post(C, "/v1/batch", { batch = { listed } }, { ["X-Pipeline-Key"] = PK_A }).status)
        assert.equal(200, post(C, "/v1/batch", { batch = big }, { ["X-Pipeline-Key"] = PK_A }).status)
        return w
      end
      local w0 = send_all()
      assert.equal(2 + BIG, #H.raw_entries(PK_A))
      send_all()                                    -- the same window or the next: all duplicates
      assert.equal(2 + BIG, #H.raw_entries(PK_A))
      assert.is_truthy(H.dedupe_marker(PK_A, single.messageId, 1))
      while window() < w0 + 2 do core.sleep(50) end
      local w2 = send_all()
      assert.equal(2 * (2 + BIG), #H.raw_entries(PK_A))
      -- windows older than the previous one are gone (unlinked, or
      -- expired); the 1 s windows are the ones numbered like unix seconds
      -- (engine A's days share the pipeline)
      local r = H.redis()
      local keys = r:call("KEYS", queue.dedupe(PK_A, "*"))
      r:close()
      local n = 0
      for _, k in ipairs(keys) do
        local w = tonumber(k:match(":(%-?%d+)$"))
        if w > w0 - 1e6 then
          n = n + 1
          assert.is_true(w >= w2 - 1, k)
        end
      end
      assert.is_true(n >= 1)
    end)

    it("stores every copy when dedupe_ttl_s is 0", function()
      local m = track()
      assert.equal(200, post(B, "/v1/t", m, { ["X-Pipeline-Key"] = PK_A }).status)
      assert.equal(200, post(B, "/v1/t", m, { ["X-Pipeline-Key"] = PK_A }).status)
      assert.equal(2, #H.raw_entries(PK_A))
    end)

    it("assigns a messageId to events that have none, and never dedupes them", function()
      local m = track()
      m.messageId = nil
      assert.equal(200, post(A, "/v1/t", m, { ["X-Pipeline-Key"] = PK_A }).status)
      assert.equal(200, post(A, "/v1/t", m, { ["X-Pipeline-Key"] = PK_A }).status)
      local entries = H.raw_entries(PK_A)
      assert.equal(2, #entries)
      assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", entries[1].ev.message_id)
      assert.not_equal(entries[1].ev.message_id, entries[2].ev.message_id)
    end)

    it("stores a batch bigger than a group commit in one transaction, in order, deduping within it", function()
      local n = LIMITS.group_max + 150
      local batch = {}
      for i = 1, n do
        batch[i] = { type = "identify", userId = "u" .. i, messageId = uid(), traits = { email = i .. "@example.com" } }
      end
      batch[n].messageId = batch[5].messageId      -- a duplicate in the last chunk
      local res = post(A, "/v1/batch", { batch = batch }, { ["X-Pipeline-Key"] = PK_A, Cookie = "_dfdid=dfid_big" })
      assert.equal(200, res.status, res.body)
      local entries = H.raw_entries(PK_A)
      assert.equal(n - 1, #entries)
      for i = 1, n - 1 do assert.equal("u" .. i, entries[i].ev.user_id) end
      -- every message's traits reached the device's identity hash; the last wins
      local r = H.redis()
      assert.equal(tostring(n - 1) .. "@example.com", r:call("HGET", queue.identity(PK_A, "dfid_big"), "email"))
      r:close()
    end)

    it("looks an id up in the current window and the one before, not older ones", function()
      -- markers planted as earlier commits would have left them
      local w = math.floor(core.now() / 86400)
      local prev, older = track(), track()
      local r = H.redis()
      assert(r:call("HSET", queue.dedupe(PK_A, w - 1), prev.messageId, "1"))
      assert(r:call("HSET", queue.dedupe(PK_A, w - 2), older.messageId, "1"))
      r:close()
      for _, path in ipairs({ "/v1/t", "/v1/batch" }) do
        local body = path == "/v1/t" and prev or { batch = { prev } }
        assert.equal(200, post(A, path, body, { ["X-Pipeline-Key"] = PK_A }).status)
      end
      assert.equal(0, #H.raw_entries(PK_A))       -- the previous window's id: a duplicate
      assert.equal(200, post(A, "/v1/t", older, { ["X-Pipeline-Key"] = PK_A }).status)
      assert.equal(1, #H.raw_entries(PK_A))       -- two windows back: remembered no more
    end)
  end)

  describe("CORS", function()
    it("grants an allowed origin on the response, with credentials and never *", function()
      local res = post(A, "/v1/t", track(), { ["X-Pipeline-Key"] = PK_A, Origin = ORIGIN_A })
      assert.equal(200, res.status)
      assert.equal(ORIGIN_A, res.headers["access-control-allow-origin"])
      assert.equal("true", res.headers["access-control-allow-credentials"])
      assert.matches("Origin", res.headers["vary"])
    end)

    it("grants an origin sent in capitals or with its default port, on requests and preflights", function()
      for _, o in ipairs({ "HTTPS://WWW.EXAMPLE.COM", "https://www.example.com:443", "HTTPS://Www.Example.Com:443" }) do
        local res = post(A, "/v1/batch", { batch = { track() } }, { ["X-Pipeline-Key"] = PK_A, Origin = o })
        assert.equal(200, res.status)
        assert.equal(o, res.headers["access-control-allow-origin"], o)
        res = assert(H.request("OPTIONS", A.url .. "/v1/t", { Origin = o, ["Access-Control-Request-Method"] = "POST" }))
        assert.equal(204, res.status)
        assert.equal(o, res.headers["access-control-allow-origin"], o)
      end
      for _, o in ipairs({ "https://www.example.com:8443", "http://www.example.com", "https://www.example.com.evil" }) do
        local res = post(A, "/v1/t", track(), { ["X-Pipeline-Key"] = PK_A, Origin = o })
        assert.equal(200, res.status)
        assert.is_nil(res.headers["access-control-allow-origin"], o)
        res = assert(H.request("OPTIONS", A.url .. "/v1/t", { Origin = o }))
        assert.is_nil(res.headers["access-control-allow-origin"], o)
      end
    end)

    it("gives another origin no grant, but still processes the request", function()
      local res = post(A, "/v1/t", track({ event = "Cross" }), { ["X-Pipeline-Key"] = PK_A, Origin = ORIGIN_B })
      assert.equal(200, res.status)
      assert.is_nil(res.headers["access-control-allow-origin"])
      assert.is_nil(res.headers["access-control-allow-credentials"])
      assert.equal("Cross", H.raw_entries(PK_A)[1].ev.event)
    end)

    it("answers a preflight for an origin of any pipeline with 204 and the allowed methods and headers", function()
      for _, origin in ipairs({ ORIGIN_A, ORIGIN_B }) do
        local res = assert(H.request("OPTIONS", A.url .. "/v1/batch", {
          Origin = origin, ["Access-Control-Request-Method"] = "POST",
          ["Access-Control-Request-Headers"] = "content-type,x-pipeline-key" }))
        assert.equal(204, res.status)
        assert.equal(origin, res.headers["access-control-allow-origin"])
        assert.equal("true", res.headers["access-control-allow-credentials"])
        assert.matches("POST", res.headers["access-control-allow-methods"])
        for _, h in ipairs({ "Content%-Type", "X%-Pipeline%-Key", "Authorization", "Content%-Encoding" }) do
          assert.matches(h, res.headers["access-control-allow-headers"])
        end
        assert.matches("Origin", res.headers["vary"])
        assert.equal("", res.body)
      end
    end)

    it("grants no preflight to an unknown origin, nor to another pipeline's origin when the key is hinted", function()
      local res = assert(H.request("OPTIONS", A.url .. "/v1/t", { Origin = "https://evil.example.net",
                                                                  ["Access-Control-Request-Method"] = "POST" }))
      assert.equal(204, res.status)
      assert.is_nil(res.headers["access-control-allow-origin"])
      res = assert(H.request("OPTIONS", A.url .. "/v1/t", { Origin = ORIGIN_B, ["X-Pipeline-Key"] = PK_A }))
      assert.is_nil(res.headers["access-control-allow-origin"])
      res = assert(H.request("OPTIONS", A.url .. "/v1/t?writeKey=" .. PK_B, { Origin = ORIGIN_B }))
      assert.equal(ORIGIN_B, res.headers["access-control-allow-origin"])
    end)
  end)

  describe("the _dfdid cookie", function()
    it("is minted on a browser's first event and becomes the canonical_id", function()
      local res = post(A, "/v1/t", track(), { ["X-Pipeline-Key"] = PK_A, Origin = ORIGIN_A })
      local cookie = res.headers["set-cookie"]
      assert.is_string(cookie)
      local id = cookie:match("^_dfdid=(dfid_%x+);")
      assert.is_string(id)
      assert.equal(37, #id)   -- "dfid_" + 32 hex
      for _, attr in ipairs({ "; Path=/", "; Max%-Age=34560000", "; HttpOnly", "; SameSite=Lax" }) do
        assert.matches(attr, cookie)
      end
      assert.is_nil(cookie:find("Secure", 1, true))
      assert.is_nil(cookie:find("Domain", 1, true))
      assert.equal(id, H.raw_entries(PK_A)[1].ev.canonical_id)
    end)

    it("is reused when the browser sends it back: same canonical_id, no new cookie", function()
      local first = post(A, "/v1/p", { name = "Home", anonymousId = "a1" }, { ["X-Pipeline-Key"] = PK_A })
      local id = first.headers["set-cookie"]:match("^_dfdid=([^;]+)")
      local second = post(A, "/v1/t", track(), { ["X-Pipeline-Key"] = PK_A,
                                                 Cookie = "_ga=GA1.1.1.2; _dfdid=" .. id .. "; other=1" })
      assert.equal(200, second.status)
      assert.is_nil(second.headers["set-cookie"])
      local entries = H.raw_entries(PK_A)
      assert.equal(2, #entries)
      assert.equal(id, entries[1].ev.canonical_id)
      assert.equal(id, entries[2].ev.canonical_id)
    end)

    it("is read up to 128 characters, on single events and browser batches", function()
      local long = "dfid_" .. string.rep("a", 123)    -- 128 characters: the contract's limit
      local bodies = { ["/v1/t"] = function() return track() end,
                       ["/v1/batch"] = function() return { batch = { track() } } end }
      for _, c in ipairs({ { "/v1/t" }, { "/v1/batch" } }) do
        local res = post(A, c[1], bodies[c[1]](), { ["X-Pipeline-Key"] = PK_A, Cookie = "_dfdid=" .. long })
        assert.equal(200, res.status, c[1])
        assert.is_nil(res.headers["set-cookie"], c[1])
        res = post(A, c[1], bodies[c[1]](), { ["X-Pipeline-Key"] = PK_A, Cookie = "_dfdid=" .. long .. "b" })
        assert.matches("^_dfdid=dfid_%x+;", res.headers["set-cookie"], c[1])
      end
      local entries = H.raw_entries(PK_A)
      assert.equal(4, #entries)
      assert.equal(long, entries[1].ev.canonical_id)
      assert.equal(long, entries[3].ev.canonical_id)
      assert.matches("^dfid_%x+$", entries[2].ev.canonical_id)
      assert.equal(37, #entries[2].ev.canonical_id)
    end)

    it("replaces a malformed cookie value with a fresh id", function()
      local res = post(A, "/v1/t", track(), { ["X-Pipeline-Key"] = PK_A, Cookie = "_dfdid=a b{c}" })
      assert.matches("^_dfdid=dfid_%x+", res.headers["set-cookie"])
    end)

    it("is Secure behind a trusted https proxy, and carries cookie_domain", function()
      local res = post(A, "/v1/t", track(), { ["X-Pipeline-Key"] = PK_A, ["X-Forwarded-Proto"] = "https" })
      assert.matches("; Secure", res.headers["set-cookie"])
      -- B does not trust the peer: its X-Forwarded-Proto is ignored
      res = post(B, "/v1/t", track(), { ["X-Pipeline-Key"] = PK_A, ["X-Forwarded-Proto"] = "https" })
      assert.is_nil(res.headers["set-cookie"]:find("Secure", 1, true))
      assert.matches("; Domain=example.com", res.headers["set-cookie"])
    end)

    it("is neither read nor minted for server-side senders", function()
      local cases = {
        { "/v1/events", { type = "track", event = "S", userId = "u", messageId = uid() }, { ["X-Pipeline-Key"] = PK_A } },
        { "/v1/track", { event = "S", userId = "u", messageId = uid() }, { Authorization = basic(PK_A) } },
        { "/v1/batch", { batch = { { type = "track", event = "S", userId = "u", messageId = uid() } } },
          { Authorization = basic(PK_A) } },
      }
      for _, c in ipairs(cases) do
        local h = c[3]
        h.Cookie = "_dfdid=dfid_server_should_not_use"
        local res = post(A, c[1], c[2], h)
        assert.equal(200, res.status, c[1])
        assert.is_nil(res.headers["set-cookie"], c[1])
      end
      for _, e in ipairs(H.raw_entries(PK_A)) do assert.is_nil(e.ev.canonical_id) end
      -- a server forwarding the visitor's id in the message keeps it
      assert.equal(200, post(A, "/v1/events", { type = "track", event = "F", userId = "u", canonicalId = "dfid_fwd" },
                             { ["X-Pipeline-Key"] = PK_A }).status)
      local entries = H.raw_entries(PK_A)
      assert.equal("dfid_fwd", entries[#entries].ev.canonical_id)
    end)

    it("treats a Basic-authenticated batch from a browser (Origin set) as browser traffic", function()
      local res = post(A, "/v1/batch", { batch = { track() } }, { Authorization = basic(PK_A), Origin = ORIGIN_A })
      assert.equal(200, res.status)
      assert.matches("^_dfdid=dfid_", res.headers["set-cookie"])
    end)
  end)

  describe("client address and user agent", function()
    it("honours X-Forwarded-For from a trusted proxy, skipping trusted hops", function()
      post(A, "/v1/t", track(), { ["X-Pipeline-Key"] = PK_A, ["X-Forwarded-For"] = "198.51.100.23, 10.1.2.3" })
      assert.equal("198.51.100.23", H.raw_entries(PK_A)[1].ev.context.ip)
    end)

    it("walks X-Forwarded-For from the right to the first untrusted hop, for single events and batches", function()
      local h = { ["X-Pipeline-Key"] = PK_A, ["X-Forwarded-For"] = "203.0.113.9, 198.51.100.1, 10.0.0.5" }
      assert.equal(200, post(A, "/v1/t", track(), h).status)
      assert.equal(200, post(A, "/v1/batch", { batch = { track(), track() } }, h).status)
      assert.equal(200, post(A, "/v1/b", { batch = { track() } }, h).status)
      local entries = H.raw_entries(PK_A)
      assert.equal(4, #entries)
      for _, e in ipairs(entries) do assert.equal("198.51.100.1", e.ev.context.ip) end
    end)

    it("ignores X-Forwarded-For from an untrusted peer", function()
      post(B, "/v1/t", track(), { ["X-Pipeline-Key"] = PK_A, ["X-Forwarded-For"] = "198.51.100.23" })
      assert.equal("127.0.0.1", H.raw_entries(PK_A)[1].ev.context.ip)
    end)

    it("uses the connection's address and User-Agent for browsers, the message's for servers", function()
      local ctx = { ip = "203.0.113.50", userAgent = "Visitor UA/1.0" }
      post(B, "/v1/t", track({ context = ctx }), { ["X-Pipeline-Key"] = PK_A, ["User-Agent"] = "Browser UA/2.0" })
      post(B, "/v1/events", track({ context = ctx }), { ["X-Pipeline-Key"] = PK_A, ["User-Agent"] = "server-sdk" })
      local entries = H.raw_entries(PK_A)
      assert.equal("127.0.0.1", entries[1].ev.context.ip)
      assert.equal("Browser UA/2.0", entries[1].ev.context.user_agent)
      assert.equal("203.0.113.50", entries[2].ev.context.ip)
      assert.equal("Visitor UA/1.0", entries[2].ev.context.user_agent)
    end)
  end)

  describe("identity stitching", function()
    it("remembers identify traits per device so the pipeline's stitching resolves a later anonymous event", function()
      local res = post(A, "/v1/i", { userId = "cust-7", anonymousId = "a7",
                                     traits = { email = "jane@example.com", phone = "+1 212 555 0142", plan = "pro" } },
                       { ["X-Pipeline-Key"] = PK_A, Origin = ORIGIN_A })
      assert.equal(200, res.status)
      local id = res.headers["set-cookie"]:match("^_dfdid=([^;]+)")
      assert.equal(200, post(A, "/v1/t", track({ anonymousId = "a7" }),
                             { ["X-Pipeline-Key"] = PK_A, Cookie = "_dfdid=" .. id }).status)
      local later = H.raw_entries(PK_A)[2].ev
      assert.is_nil(later.identity)
      local r = H.redis()
      local got = stitch.run({ redis = r }, PK_A, later)
      assert.same({ email = "jane@example.com", phone = "+1 212 555 0142", user_id = "cust-7" }, got)
      assert.same(got, later.identity)
      local ttl = r:call("TTL", queue.identity(PK_A, id))
      r:close()
      assert.is_true(ttl > 34000000)
    end)

    it("remembers the linking keys of batch messages too", function()
      local cid = "dfid_" .. core.random_hex(16)
      local res = post(A, "/v1/batch", { batch = {
        { type = "track", event = "E", anonymousId = "a9", messageId = uid() },
        { type = "identify", userId = "cust-9", messageId = uid(), context = { traits = { phone = "+1 555" } },
          traits = { email = "b@example.com" } } } }, { ["X-Pipeline-Key"] = PK_A, Cookie = "_dfdid=" .. cid })
      assert.equal(200, res.status, res.body)
      local r = H.redis()
      assert.same({ email = "b@example.com", phone = "+1 555", user_id = "cust-9" },
                  stitch.run({ redis = r }, PK_A, { canonical_id = cid }))
      r:close()
    end)

    it("also remembers linking keys carried by another event's traits, and nothing from plain events", function()
      local cid = "dfid_" .. core.random_hex(16)
      post(A, "/v1/t", track({ anonymousId = "a8" }), { ["X-Pipeline-Key"] = PK_A, Cookie = "_dfdid=" .. cid })
      local r = H.redis()
      assert.equal(0, r:call("EXISTS", queue.identity(PK_A, cid)))
      post(A, "/v1/t", track({ anonymousId = "a8", context = { traits = { email = "k@example.com" } } }),
           { ["X-Pipeline-Key"] = PK_A, Cookie = "_dfdid=" .. cid })
      local ev = { canonical_id = cid }
      assert.same({ email = "k@example.com" }, stitch.run({ redis = r }, PK_A, ev))
      -- no cookie-less lookups, no error for an unknown device
      assert.is_nil(stitch.run({ redis = r }, PK_A, { canonical_id = "dfid_unknown" }))
      assert.is_nil(stitch.run({ redis = r }, PK_A, {}))
      r:close()
    end)
  end)

  describe("metrics", function()
    it("counts received, accepted, deduplicated and rejected events", function()
      local metrics = require "signal.observe.metrics"
      if not metrics.inc then pending("signal.observe.metrics has no inc() yet") return end
      local m = track()
      post(A, "/v1/t", m, { ["X-Pipeline-Key"] = PK_A })
      post(A, "/v1/t", m, { ["X-Pipeline-Key"] = PK_A })
      post(A, "/v1/t", "{", { ["X-Pipeline-Key"] = PK_A })
      post(A, "/v1/t", m, { ["X-Pipeline-Key"] = "dk_nope" })
      post(A, "/v1/t", "x", { ["X-Pipeline-Key"] = PK_A, ["Content-Encoding"] = "br" })
      post(A, "/v1/batch", { batch = { track(), { type = "track" } } }, { ["X-Pipeline-Key"] = PK_A })
      H.eventually(function()
        local res = H.request("GET", A.url .. "/metrics")
        if not res or res.status ~= 200 then return false, res and res.status end
        local b = res.body
        return b:find('events_received_total{pipeline="' .. PK_A .. '"}', 1, true)
          and b:find('events_accepted_total{pipeline="' .. PK_A .. '"}', 1, true)
          and b:find('events_deduplicated_total{pipeline="' .. PK_A .. '"}', 1, true)
          and b:find('events_rejected_total{reason="invalid_json"}', 1, true)
          and b:find('events_rejected_total{reason="invalid_pipeline_key"}', 1, true)
          and b:find('events_rejected_total{reason="unsupported_media_type"}', 1, true)
          and b:find('events_rejected_total{reason="invalid_batch"}', 1, true)
          and b:find('signal_http_request_duration_seconds_count{method="POST",route="/v1/t"}', 1, true), "series missing"
      end, 10, "collector series in /metrics")
    end)
  end)
end)

describe("collector with Redis down", function()
  local redis, E
  local PK = "dk_col_down"

  setup(function()
    redis = H.redis_server()
    H.park_processor(PK, redis.url)
    E = H.engine({ redis = redis.url, pipelines = { { key = PK } } })
  end)

  teardown(function()
    if E then E:stop() end
    if redis then redis:stop() end
  end)

  it("answers 503 (never 200) while Redis is unreachable, and 200 again once it is back", function()
    local function send(id)
      return post(E, "/v1/t", track({ messageId = id }), { ["X-Pipeline-Key"] = PK })
    end
    assert.equal(200, send(uid()).status)
    redis:stop()
    local res = send(uid())
    assert.equal(503, res.status)
    assert.equal("REDIS_UNAVAILABLE", err_of(res).code)
    local health = assert(H.request("GET", E.url .. "/healthz"))
    assert.equal(503, health.status)

    redis:start()
    H.park_processor(PK, redis.url)     -- the restarted Redis is empty
    local recovered = uid()
    H.eventually(function() return send(recovered).status == 200 end, 15, "200 after Redis came back")
    assert.equal(200, assert(H.request("GET", E.url .. "/healthz")).status)
    local entries = H.raw_entries(PK, redis.url)
    assert.equal(1, #entries)
    assert.equal(recovered, entries[1].ev.message_id)
  end)
end)
