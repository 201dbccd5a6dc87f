-- Admission of one request, atomically and in one round trip (services/votes/admission.py calls it):
--   1. every rate limit that applies (GCRA): all of them count the request, or none does when one refuses it;
--   2. the idempotency record: a retry is told what the first request got, another body under the key a conflict;
--   3. the voter's current ballot: the same verdict again is "unchanged", else the new one is remembered.
--
-- KEYS: n limit keys, then the idempotency record key (when ARGV[2] == "1"), then the ballot key (ARGV[3] == "1").
-- ARGV: n, has_record, has_ballot, then interval_us and burst of each limit, then
--       request_hash, record, record_ttl_s, ballot, ballot_ttl_s.
-- Returns {outcome, record or "", then remaining, reset_us, retry_us of each limit}; outcome is one of
-- "limited", "replay", "conflict", "unchanged", "proceed".

local n = tonumber(ARGV[1])
local has_record = ARGV[2] == "1"
local has_ballot = ARGV[3] == "1"
local rest = 4 + 2 * n
local request_hash, record = ARGV[rest], ARGV[rest + 1]
local record_ttl, ballot, ballot_ttl = ARGV[rest + 2], ARGV[rest + 3], ARGV[rest + 4]

-- Redis' clock, so that every copy of the service measures time alike.
local clock = redis.call("TIME")
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local result = { "", "" }
local new_tats = {}
local limited = false
for i = 1, n do
  local interval = tonumber(ARGV[2 + 2 * i])
  local burst = tonumber(ARGV[3 + 2 * i])
  local tat = tonumber(redis.call("GET", KEYS[i])) or now
  if tat < now then
    tat = now
  end
  local new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  if allow_at > now then
    limited = true
    result[#result + 1] = 0
    result[#result + 1] = tat - now
    result[#result + 1] = allow_at - now
  else
    result[#result + 1] = math.floor((now - allow_at) / interval)
    result[#result + 1] = new_tat - now
    result[#result + 1] = 0
  end
  new_tats[i] = new_tat
end
if limited then
  result[1] = "limited"
  return result
end
for i = 1, n do
  -- "%.0f": Lua's default number format would round a microsecond timestamp to 14 digits.
  redis.call("SET", KEYS[i], string.format("%.0f", new_tats[i]), "PX", math.ceil((new_tats[i] - now) / 1000))
end

local record_key = nil
if has_record then
  record_key = KEYS[n + 1]
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
  local ballot_key = KEYS[n + (has_record and 2 or 1)]
  if redis.call("GET", ballot_key) == ballot then
    redis.call("EXPIRE", ballot_key, ballot_ttl)
    if has_record then
      redis.call("SET", record_key, request_hash .. "|200||", "EX", record_ttl)
    end
    result[1] = "unchanged"
    return result
  end
  redis.call("SET", ballot_key, ballot, "EX", ballot_ttl)
end
if has_record then
  redis.call("SET", record_key, record, "EX", record_ttl)
end
result[1] = "proceed"
return result
