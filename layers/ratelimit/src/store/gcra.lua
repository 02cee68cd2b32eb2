-- tower-kit-ratelimit: GCRA for several (policy, key) states at once, all-or-nothing.
-- It mirrors `tower_kit_ratelimit::store::gcra` exactly. Lua numbers are doubles (53-bit mantissa), so no
-- nanosecond count since the epoch (~1.8e18) is ever held in one number: every time is a pair
-- (whole seconds, nanoseconds < 1e9), both exact in a double, and u64 saturation is done on the pairs.
--
-- KEYS[i]  the state of check i: a string "<seconds>:<nanoseconds>" (its theoretical arrival time, `tat`), kept
--          with a TTL of `tat - now` (rounded up to the millisecond), so a state back to a full quota expires.
-- ARGV[1], ARGV[2]  "" "" (use the server clock: TIME), or `now` as seconds and nanoseconds (tests).
-- ARGV[3 + 4(i-1) ..]  for check i: `cost x T` (saturated) as seconds, nanoseconds; then `C = burst x T`, same.
-- Returns {admitted (1/0), now_s, now_ns, tat_1_s, tat_1_ns, ...}: the states *before* the decision (-1, -1 when
-- missing), from which the client computes every outcome with the same `gcra` function.
local G = 1000000000
local MAX_S, MAX_NS = 18446744073, 709551615 -- u64::MAX nanoseconds

local function le(as, ans, bs, bns)
  return as < bs or (as == bs and ans <= bns)
end

local function add_sat(as, ans, bs, bns)
  local s, ns = as + bs, ans + bns
  if ns >= G then
    s, ns = s + 1, ns - G
  end
  if le(s, ns, MAX_S, MAX_NS) then
    return s, ns
  end
  return MAX_S, MAX_NS
end

local function sub(as, ans, bs, bns) -- a >= b
  local s, ns = as - bs, ans - bns
  if ns < 0 then
    s, ns = s - 1, ns + G
  end
  return s, ns
end

local now_s, now_ns
if ARGV[1] == '' then
  if redis.replicate_commands then
    redis.replicate_commands() -- Redis < 5: replicate the writes, not the script (TIME is not deterministic)
  end
  local t = redis.call('TIME')
  now_s, now_ns = tonumber(t[1]), tonumber(t[2]) * 1000
else
  now_s, now_ns = tonumber(ARGV[1]), tonumber(ARGV[2])
end

local n = #KEYS
local reply = {1, now_s, now_ns}
local new_s, new_ns = {}, {}
for i = 1, n do
  local a = 3 + 4 * (i - 1)
  local inc_s, inc_ns = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local cap_s, cap_ns = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local base_s, base_ns = now_s, now_ns
  local tat_s, tat_ns = -1, -1
  local stored = redis.call('GET', KEYS[i])
  if stored then
    local s, ns = string.match(stored, '^(%d+):(%d+)$')
    if s then
      tat_s, tat_ns = tonumber(s), tonumber(ns)
      if not le(tat_s, tat_ns, now_s, now_ns) then
        base_s, base_ns = tat_s, tat_ns
      end
    end
  end
  reply[2 + 2 * i], reply[3 + 2 * i] = tat_s, tat_ns
  if inc_s ~= 0 or inc_ns ~= 0 then -- cost 0: always admitted, nothing written
    local s, ns = add_sat(base_s, base_ns, inc_s, inc_ns)
    local ds, dns = sub(s, ns, now_s, now_ns)
    if le(ds, dns, cap_s, cap_ns) then
      new_s[i], new_ns[i] = s, ns
    else
      reply[1] = 0
    end
  end
end

if reply[1] == 1 then
  for i = 1, n do
    if new_s[i] then
      local ds, dns = sub(new_s[i], new_ns[i], now_s, now_ns)
      local ttl_ms = ds * 1000 + math.ceil(dns / 1000000)
      if ttl_ms < 1 then
        ttl_ms = 1
      end
      redis.call('SET', KEYS[i], string.format('%.0f:%.0f', new_s[i], new_ns[i]), 'PX', ttl_ms)
    end
  end
end
return reply
