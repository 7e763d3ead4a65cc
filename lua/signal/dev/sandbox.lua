-- signal.dev.sandbox — entry for `signal sandbox`: local stand-ins of the
-- vendors Signal delivers to, for demos, specs and customers' dry runs.
--
-- Each destination that has a stand-in (signal.destinations: `sandbox`)
-- answers the requests under its path prefix (or that its match(path)
-- accepts) the way its vendor does (e.g. /prof/…, GA4's /mp/collect, Meta's
-- /v21.0/{pixel}/events or the webhook receiver's /hooks/…); this module
-- records every request so anyone can see exactly what Signal sent, injects
-- faults and latency, and runs the control API under /_sandbox/.
--
-- The engine runs it on ONE worker (signal.dev.cli), so all state is plain
-- Lua tables shared by every request coroutine of this process. It is the
-- upstream in benchmarks, so the per-request path stays cheap: index lookups
-- only, a bounded ring of recorded requests, and recorded bodies are decoded
-- only when someone asks for them (GET /_sandbox/requests).
--
-- The fixture file (`signal sandbox --profiles FILE`) is one JSON object;
-- each stand-in reads its own keys from it (spec/fixtures/profiles.json).
--
-- Control API (JSON):
--   GET  /_sandbox/requests?prefix=/prof/events&since=SEQ&limit=N
--        → {"requests":[{seq,method,path,query,params,headers,body,json,status,time,duration_ms}],"last_seq":N}
--   POST /_sandbox/reset     fixture state back, faults and log cleared (seq keeps growing)
--   POST /_sandbox/faults    {"prefix","method","status","times","latency_ms","retry_after","body"}
--                            (prefix default "/": every vendor path)
--   DELETE /_sandbox/faults  clear faults
--   GET  /_sandbox/stats     {"requests","in_flight","max_in_flight","by_status", and each
--                             stand-in's counters (events, lookups, profiles, webhooks …)}
--   plus each stand-in's own routes (e.g. POST /_sandbox/profiles).
-- Env SANDBOX_LATENCY_MS: latency added to every vendor request (benchmarks).
local core = require "signal.core"
local cjson = require("cjson.safe").new()
local http = require "signal.http.response"
local destinations = require "signal.destinations"

local type, pairs, ipairs, tonumber, tostring = type, pairs, ipairs, tonumber, tostring
local sub, find, lower, concat = string.sub, string.find, string.lower, table.concat
local now, sleep = core.now, core.sleep

local M = {}

local MAX_BODY_BYTES = 65536    -- of a recorded request body
local LOG_CAP = 10000           -- recorded requests kept (oldest dropped)
local JSON = { ["Content-Type"] = "application/json" }

---------------------------------------------------------------------------
-- helpers

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function ctl_error(status, message)
  return http.error(status, "BAD_REQUEST", message)
end

-- JSON array from a list of already-encoded items (lua-cjson 2.1.0 encodes
-- an empty table as {}, so arrays that may be empty are built by hand).
local function json_array(items)
  return "[" .. concat(items, ",") .. "]"
end

---------------------------------------------------------------------------
-- state

local fixture                     -- decoded fixture (pristine; state is rebuilt from it)
local standins = {}               -- the destinations' stand-in modules
local faults = {}
local log, first_seq, last_seq = {}, 1, 0
local stats
local generation = 0              -- bumped by reset: requests begun before it are not recorded after it
local base_latency = tonumber(os.getenv("SANDBOX_LATENCY_MS") or "") or 0

local function new_stats()
  local s = { requests = 0, in_flight = 0, max_in_flight = 0, by_status = {} }
  for _, sb in ipairs(standins) do
    for _, c in ipairs(sb.counters or {}) do s[c] = 0 end
  end
  return s
end

local function load_state()
  for _, sb in ipairs(standins) do sb.load(fixture) end
  faults = {}
  stats = new_stats()
  log, first_seq = {}, last_seq + 1
  generation = generation + 1
end

local function read_fixture(path)
  if path == nil or path == "" then return {} end
  local fh, err = io.open(path, "rb")
  if not fh then error("sandbox: cannot read profiles file: " .. tostring(err), 0) end
  local src = fh:read("*a")
  fh:close()
  local t, derr = cjson.decode(src)
  if type(t) ~= "table" then error("sandbox: " .. path .. ": invalid JSON: " .. tostring(derr), 0) end
  return t
end

-- standin_for(path) → the stand-in that serves path: its match(path) says
-- so (vendors whose paths share no prefix, e.g. /{version}/{pixel}/events),
-- or path starts with its prefix
local function standin_for(path)
  for _, sb in ipairs(standins) do
    if sb.match then
      if sb.match(path) then return sb end
    elseif sub(path, 1, #sb.prefix) == sb.prefix then
      return sb
    end
  end
end

---------------------------------------------------------------------------
-- recording

local function record(req, status, t0)
  local seq = last_seq + 1
  last_seq = seq
  local body = req.body
  local truncated
  if body and #body > MAX_BODY_BYTES then
    body, truncated = sub(body, 1, MAX_BODY_BYTES), true
  end
  log[seq] = { seq = seq, method = req.method, path = req.path, query = req.query or "",
               headers = req.headers, body = body or "", body_truncated = truncated,
               status = status, time = t0, duration_ms = (now() - t0) * 1000 }
  if seq - first_seq >= LOG_CAP then
    log[first_seq] = nil
    first_seq = first_seq + 1
  end
end

local function encode_record(r, decode)
  local out = copy(r)
  out.params = {}
  for _, p in ipairs(http.query_pairs(r.query)) do
    if out.params[p[1]] == nil then out.params[p[1]] = p[2] end
  end
  if decode then
    local ct = r.headers["content-type"] or ""
    if r.body ~= "" and (find(lower(ct), "json", 1, true) or find(r.body, "^%s*[{%[]")) then
      local v = cjson.decode(r.body)
      if v ~= nil then out.json = v end
    end
  end
  return cjson.encode(out)
end

---------------------------------------------------------------------------
-- faults

local function match_fault(req)
  for i = 1, #faults do
    local f = faults[i]
    if sub(req.path, 1, #f.prefix) == f.prefix and (f.method == nil or f.method == req.method) then
      if f.times then
        f.times = f.times - 1
        if f.times <= 0 then table.remove(faults, i) end
      end
      return f
    end
  end
end

local function fault_response(f)
  local h = { ["Content-Type"] = "application/json" }
  if f.retry_after then h["Retry-After"] = tostring(f.retry_after) end
  return f.status, h, f.body or cjson.encode({ error = "sandbox-fault", message = "injected fault " .. f.status })
end

---------------------------------------------------------------------------
-- control API

local function body_json(req)
  local v = cjson.decode(req.body or "")
  if type(v) ~= "table" then return nil end
  return v
end

local control = {}

control["GET /_sandbox/requests"] = function(req)
  local q = http.parse_query(req.query)
  local prefix = q.prefix
  local since = tonumber(q.since) or 0
  local limit = tonumber(q.limit)
  local items = {}
  local from = since + 1
  if from < first_seq then from = first_seq end
  for seq = from, last_seq do
    local r = log[seq]
    if r and (prefix == nil or sub(r.path, 1, #prefix) == prefix) then
      items[#items + 1] = r
    end
  end
  if limit and #items > limit then
    local tail = {}
    for i = #items - limit + 1, #items do tail[#tail + 1] = items[i] end
    items = tail
  end
  for i = 1, #items do items[i] = encode_record(items[i], true) end
  return 200, JSON, '{"requests":' .. json_array(items) .. ',"last_seq":' .. last_seq .. "}"
end

control["POST /_sandbox/reset"] = function()
  load_state()
  return http.json(200, { reset = true, last_seq = last_seq })
end

control["POST /_sandbox/faults"] = function(req)
  local v = body_json(req)
  if not v then return ctl_error(400, "body must be a JSON object") end
  local status = v.status ~= nil and tonumber(v.status) or nil
  local latency = tonumber(v.latency_ms or 0) or 0
  if status == nil and latency <= 0 then
    return ctl_error(400, "a fault needs a status, a latency_ms, or both")
  end
  local f = { prefix = v.prefix or "/", method = v.method, status = status,
              times = v.times ~= nil and tonumber(v.times) or nil, latency_ms = latency,
              retry_after = v.retry_after, body = v.body }
  faults[#faults + 1] = f
  return http.json(200, { faults = #faults })
end

control["DELETE /_sandbox/faults"] = function()
  faults = {}
  return http.json(200, { faults = 0 })
end

control["GET /_sandbox/stats"] = function()
  local s = copy(stats)
  s.last_seq = last_seq
  s.faults = #faults
  return http.json(200, s)
end

---------------------------------------------------------------------------
-- entry

local function bump_status(status)
  local k = tostring(status)
  stats.by_status[k] = (stats.by_status[k] or 0) + 1
end

local function handle(req)
  if sub(req.path, 1, 10) == "/_sandbox/" then
    local fn = control[req.method .. " " .. req.path]
    if not fn then return http.error(404, "NOT_FOUND", "no sandbox control route " .. req.method .. " " .. req.path) end
    return fn(req)
  end

  local t0 = now()
  local gen, st = generation, stats
  -- counted on arrival, faulted or not: specs count the calls Signal made
  local sb = standin_for(req.path)
  local kind = sb and sb.kind(req.path)
  if kind then st[kind] = st[kind] + 1 end
  st.requests = st.requests + 1
  st.in_flight = st.in_flight + 1
  if st.in_flight > st.max_in_flight then st.max_in_flight = st.in_flight end

  local f = #faults > 0 and match_fault(req) or nil
  local latency = base_latency + (f and f.latency_ms or 0)
  if latency > 0 then sleep(latency) end

  local status, headers, body
  if f and f.status then
    status, headers, body = fault_response(f)
  elseif sb then
    status, headers, body = sb.handle(req)
  else
    status, headers, body = http.error(404, "NOT_FOUND", "no vendor stand-in serves " .. req.path)
  end

  st.in_flight = st.in_flight - 1
  -- a reset while this request slept: it belongs to the old generation, so
  -- it stays out of the new log (specs reset between cases)
  if gen == generation then
    bump_status(status)
    record(req, status, t0)
  end
  return status, headers, body
end

function M.start(args)
  fixture = read_fixture(args and args[1] or "")
  for _, d in ipairs(destinations.with("sandbox")) do
    local sb = require(d.sandbox)
    standins[#standins + 1] = sb
    for route, fn in pairs(sb.control or {}) do control[route] = fn end
  end
  load_state()
  return handle
end

return M
