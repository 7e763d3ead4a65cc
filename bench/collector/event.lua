-- bench/collector/event.lua — prints the benchmark's event: a datafly.js
-- track event with the full context the SDK sends (page, campaign, screen,
-- library, session, vendor cookies, consent) — ~1.1 KB, as in
-- the anchor figures (nginx + Lua reading a 1.1 KB JSON body). `messageId` is a placeholder that
-- post.lua replaces per request, so dedupe never short-circuits a request.
-- It is the LAST member on purpose: wrk builds each request as a Lua string,
-- and LuaJIT hashes long strings from a few sampled bytes (first, last,
-- middle); with the id in the middle every request string of the run fell
-- into one hash chain and wrk itself spent its time in memcmp. A varying
-- tail keeps the load generator cheap — for nginx and Signal alike.
local ev = [[
{"type":"track","event":"Product Added","properties":{"product_id":"SKU-48213","name":"Trail Runner 4 GTX","category":"Shoes/Running/Trail","variant":"Black / 42","price":139.95,"quantity":1,"currency":"USD"},"userId":"cust_10482","anonymousId":"cba00c1b-0fe8-4b85-b9d9-957978be1d99","timestamp":"2026-04-17T15:37:10.484Z","context":{"page":{"url":"https://www.example.com/p/trail-runner-4-gtx?utm_source=news","path":"/p/trail-runner-4-gtx","referrer":"https://www.google.com/","title":"Trail Runner 4 | Acme","search":"?utm_source=news"},"campaign":{"source":"news","medium":"email"},"locale":"en-US","timezone":"Europe/London","screen":{"width":1512,"height":982,"density":2},"library":{"name":"datafly.js","version":"1.8.0"},"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15","session":{"id":"df547e34-062f-41e5-94a3-55c0048f2134","count":4},"vendorIds":{"ga":"GA1.1.1234567890.1713366000"},"consent":{"analytics":true,"marketing":false,"google":{"ad_storage":"denied","analytics_storage":"granted"}}},"sentAt":"2026-04-17T15:37:10.684Z","messageId":"MESSAGE_ID_PLACEHOLDER"}]]
io.write((ev:gsub("%s+$", "")))
