-- Budgets kept in Redis, one decision per call. The rules are counter's in
-- window.go; a budget is a hash {w = window, u = used in it, d = debt
-- carried into it}.
--
-- ARGV[1] is the operation, ARGV[2] the time in ms since the Unix epoch
-- (or -1 for this server's TIME), ARGV[3] the window length in ms.
--
-- admit: ARGV[4..] = limit, cost for each key. Charges every budget or
--   none; returns {now, ok, then w, u, d of each budget}: after charging
--   when ok is 1, as they were when it is 0.
-- settle: ARGV[4..] = limit, diff (actual - reserved), window charged,
--   for each key. Returns {now}.
local op = ARGV[1]
local now = tonumber(ARGV[2])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local win = tonumber(ARGV[3])
local w = math.floor(now / win)

-- roll reads a budget brought forward to window w; one charging something
-- never goes back in time.
local function roll(key, limit)
  local s = redis.call('HMGET', key, 'w', 'u', 'd')
  local cw, u, d = tonumber(s[1]) or w, tonumber(s[2]) or 0, tonumber(s[3]) or 0
  if u + d <= 0 then
    return w, 0, 0
  end
  if cw < w then
    d = math.max(0, u + d - (w - cw) * limit)
    u = 0
    cw = w
  end
  return cw, u, d
end

-- save writes a budget that expires once at rest, plus a window for
-- replicas' clocks; a budget at rest is the same as none.
local function save(key, cw, u, d, limit)
  local total = u + d
  if total <= 0 then
    redis.call('DEL', key)
    return
  end
  redis.call('HSET', key, 'w', string.format('%d', cw), 'u', string.format('%d', u), 'd', string.format('%d', d))
  local rest = cw + math.ceil(total / limit)
  redis.call('PEXPIRE', key, string.format('%d', (rest + 1) * win - now))
end

if op == 'admit' then
  local st, ok = {}, 1
  for i = 1, #KEYS do
    local limit, cost = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
    local cw, u, d = roll(KEYS[i], limit)
    if u + d + cost > limit then
      ok = 0
    end
    st[i] = {cw, u, d, limit, cost}
  end
  local out = {now, ok}
  for i = 1, #KEYS do
    local s = st[i]
    if ok == 1 and s[5] > 0 then
      s[2] = s[2] + s[5]
      save(KEYS[i], s[1], s[2], s[3], s[4])
    end
    out[#out + 1] = s[1]
    out[#out + 1] = s[2]
    out[#out + 1] = s[3]
  end
  return out
end

if op == 'settle' then
  for i = 1, #KEYS do
    local limit, diff, rw = tonumber(ARGV[1 + 3 * i]), tonumber(ARGV[2 + 3 * i]), tonumber(ARGV[3 + 3 * i])
    if diff > 0 or redis.call('EXISTS', KEYS[i]) == 1 then
      local cw, u, d = roll(KEYS[i], limit)
      if diff > 0 then
        u = u + diff
      elseif cw == rw then
        u = math.max(0, u + diff)
      else
        d = math.max(0, d + diff)
      end
      save(KEYS[i], cw, u, d, limit)
    end
  end
  return {now}
end

return redis.error_reply('unknown operation ' .. tostring(op))
