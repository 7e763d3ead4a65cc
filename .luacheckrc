-- .luacheckrc — luacheck settings for Signal's Lua (`make lint`).
std = "luajit"
max_line_length = 120

-- busted's globals in specs; long lines there are literal tokens and payloads
files["spec/"] = { std = "+busted", max_line_length = false }
files["examples/signal.conf.lua"] = { max_line_length = false }
files["bench/collector/event.lua"] = { max_line_length = false }
-- blueprint files run in the mapping sandbox (signal.pipeline.scripts)
local blueprint_env = { read_globals = { "prop", "join", "sha256" } }
files["presets/"] = blueprint_env
files["examples/scripts/"] = blueprint_env
-- customer-style fixtures: hooks keep their documented signatures, and
-- some touch what the sandbox refuses on purpose
files["spec/fixtures/scripts/"] = { read_globals = blueprint_env.read_globals, unused = false }
files["spec/fixtures/configs/"] = { globals = { "os" }, unused = false }
-- wrk's Lua scripts
files["bench/**/post.lua"] = { globals = { "wrk", "request", "response", "done", "init", "setup", "delay" } }
files["bench/**/*_wrk.lua"] = { globals = { "wrk", "request", "response", "done", "init", "setup", "delay" } }
-- broken on purpose: the specs check how their errors are reported
exclude_files = { "var/", "node_modules/", "build/", "spec/fixtures/scripts/broken_syntax/02_broken.lua",
                  "spec/fixtures/configs/syntax_error*.conf.lua" }
files["tools/collect-diff.lua"] = { max_line_length = false }
