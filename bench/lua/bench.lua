-- wrk script for shipskip's benchmarks (driven by bench/wrk.py; see bench/README.md).
--
-- wrk -s bench.lua URL -- MODE MAX_PER_THREAD [TOKENS_FILE COMPARISON TOOL_A TOOL_B CURSOR THREADS]
--   MODE            "get": wrk's own request (the URL), or "vote": POST a vote per request
--   MAX_PER_THREAD  a thread stops after this many responses (0: only the -d duration bounds the run)
--   TOKENS_FILE     voter tokens, one a line; vote i (counted from CURSOR, threads interleaved) is cast by
--                   token i mod N on tool (i div N) mod 2 with verdict ((i div N) div 2) mod 2, so a voter
--                   who comes round again always changes their verdict: every vote is a real change.
--   THREADS         wrk's -t: thread k takes votes CURSOR + k, CURSOR + k + THREADS, ...
-- done() prints one line "BENCH_JSON {...}": requests, duration, errors, latency percentiles, status counts.

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

local mode = "get"
local max_responses = 0
local responses = 0
statuses = {}

local tokens = {}
local ntokens = 0
local path = "/"
local bodies = {}
local cursor = 0
local stride = 1

function init(args)
   mode = args[1] or "get"
   max_responses = tonumber(args[2]) or 0
   if mode == "vote" then
      for line in io.lines(args[3]) do
         if #line > 0 then
            tokens[#tokens + 1] = line
         end
      end
      ntokens = #tokens
      path = "/v1/comparisons/" .. args[4] .. "/votes"
      local tools = { args[5], args[6] }
      for t = 1, 2 do
         for v = 1, 2 do
            local verdict = (v == 1) and "ship" or "skip"
            bodies[(t - 1) * 2 + v] = '{"tool_id":"' .. tools[t] .. '","verdict":"' .. verdict .. '"}'
         end
      end
      stride = tonumber(args[8]) or 1
      cursor = (tonumber(args[7]) or 0) + thread_index
   end
end

function request()
   if mode ~= "vote" then
      return wrk.request()
   end
   local i = cursor
   cursor = cursor + stride
   local pass = math.floor(i / ntokens)
   local tool = pass % 2
   local verdict = math.floor(pass / 2) % 2
   local headers = {}
   headers["X-Voter-Token"] = tokens[(i % ntokens) + 1]
   headers["Content-Type"] = "application/json"
   return wrk.format("POST", path, headers, bodies[tool * 2 + verdict + 1])
end

function response(status, headers, body)
   responses = responses + 1
   statuses[status] = (statuses[status] or 0) + 1
   if max_responses > 0 and responses >= max_responses then
      wrk.thread:stop()
   end
end

function done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      local counts = thread:get("statuses") or {}
      for status, count in pairs(counts) do
         total[status] = (total[status] or 0) + count
      end
   end
   local parts = {}
   for status, count in pairs(total) do
      parts[#parts + 1] = string.format('"%d":%d', status, count)
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
         .. '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d},"statuses":{%s}}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), table.concat(parts, ",")))
end
