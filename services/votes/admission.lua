-- Admission of the requests of one event-loop turn, in one round trip (services/votes/admission.py sends them,
-- redis_batch.py gathers them). For each request, atomically:
--   0. the voter's forget marker: a vote of a forgotten voter is refused before anything else ("forgotten"); a
--      forget (DELETE /v1/voters/me) sets it once its limits let it through;
--   1. every rate limit that applies (GCRA): all of them count the request, or none does when one refuses it;
--   2. the idempotency record: a retry is told what the first request got, another body under the key a conflict;
--   3. the voter's current ballot: the same verdict again is "unchanged", else the new one is remembered.
--
-- KEYS: each request's keys in turn: its forget marker key (when it has a voter mode), its n limit keys, then its
--       idempotency record key (when it has one), then its ballot key (when it has one).
-- ARGV: record_ttl_s, ballot_ttl_s, forgotten_ttl_s, then the requests as one JSON array (one argument rather than a
--       dozen a request: redis-py's CPU goes by the argument), each [n, has_record (1/0), has_ballot (1/0),
--       voter_mode (0: none, 1: refuse a forgotten voter, 2: forget the voter), interval_us and burst of each limit,
--       request_hash, record, ballot].
-- Returns a JSON array of one reply per request: [outcome, record or "", then remaining, reset_us, retry_us of each
-- limit (as strings of digits)], where outcome is one of "forgotten", "limited", "replay", "conflict", "unchanged",
-- "proceed"; or ["error", message] for a request whose commands failed (the others' replies stand).

local record_ttl, ballot_ttl, forgotten_ttl = ARGV[1], ARGV[2], ARGV[3]
local requests = cjson.decode(ARGV[4])

-- Redis' clock, so that every copy of the service measures time alike.
local clock = redis.call("TIME")
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

-- One request: its keys start after KEYS[k].
local function admit(k, r, n, has_record, has_ballot, voter_mode)
  local rest = 5 + 2 * n
  local request_hash, record, ballot = r[rest], r[rest + 1], r[rest + 2]
  local result = { "", "" }
  local forget_key = nil
  if voter_mode > 0 then
    k = k + 1
    forget_key = KEYS[k]
    if voter_mode == 1 and redis.call("EXISTS", forget_key) == 1 then
      result[1] = "forgotten"
      return result
    end
  end
  local new_tats = {}
  local limited = false
  for i = 1, n do
    local interval = r[3 + 2 * i]
    local burst = r[4 + 2 * i]
    local tat = tonumber(redis.call("GET", KEYS[k + i])) or now
    if tat < now then
      tat = now
    end
    local new_tat = tat + interval
    local allow_at = new_tat - burst * interval
    -- As "%.0f" strings: cjson would write numbers with 14 significant digits at most.
    if allow_at > now then
      limited = true
      result[#result + 1] = "0"
      result[#result + 1] = string.format("%.0f", tat - now)
      result[#result + 1] = string.format("%.0f", allow_at - now)
    else
      result[#result + 1] = string.format("%.0f", math.floor((now - allow_at) / interval))
      result[#result + 1] = string.format("%.0f", new_tat - now)
      result[#result + 1] = "0"
    end
    new_tats[i] = new_tat
  end
  if limited then
    result[1] = "limited"
    return result
  end
  for i = 1, n do
    -- "%.0f": Lua's default number format would round a microsecond timestamp to 14 digits.
    redis.call("SET", KEYS[k + i], string.format("%.0f", new_tats[i]), "PX", math.ceil((new_tats[i] - now) / 1000))
  end
  if voter_mode == 2 then
    -- Kept as long as a token may live: every token of this voter is refused until it would have expired anyway.
    redis.call("SET", forget_key, "1", "EX", forgotten_ttl)
  end

  local record_key = nil
  if has_record then
    record_key = KEYS[k + n + 1]
    local found = redis.call("GET", record_key)
    if found then
      if string.sub(found, 1, #request_hash + 1) == request_hash .. "|" then
        result[1] = "replay"
        result[2] = found
      else
        result[1] = "conflict"
      end
      return result
    end
  end

  if has_ballot then
    local ballot_key = KEYS[k + n + (has_record and 2 or 1)]
    -- SET ... GET: the ballot written again even when unchanged, so that it is remembered as long.
    if redis.call("SET", ballot_key, ballot, "EX", ballot_ttl, "GET") == ballot then
      if has_record then
        redis.call("SET", record_key, request_hash .. "|200||", "EX", record_ttl)
      end
      result[1] = "unchanged"
      return result
    end
  end
  if has_record then
    redis.call("SET", record_key, record, "EX", record_ttl)
  end
  result[1] = "proceed"
  return result
end

local replies = {}
local k = 0
for j, r in ipairs(requests) do
  local n = r[1]
  local has_record = r[2] == 1
  local has_ballot = r[3] == 1
  local voter_mode = r[4]
  local ok, reply = pcall(admit, k, r, n, has_record, has_ballot, voter_mode)
  if not ok then
    -- An error reply of redis.call arrives as a table with its message in "err".
    reply = { "error", type(reply) == "table" and reply.err or tostring(reply) }
  end
  replies[j] = reply
  k = k + (voter_mode > 0 and 1 or 0) + n + (has_record and 1 or 0) + (has_ballot and 1 or 0)
end
return cjson.encode(replies)
