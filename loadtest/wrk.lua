-- exitserve's wrk script: POST prepared v2 binary bodies, rotating, and print a JSON summary.
-- Arguments (after `--`): the bodies file and its index ("offset length header_length" per line;
-- header_length 0 marks a JSON body, anything else a v2 binary body with that JSON header).
-- Every request is formatted once in init(), so request() costs a table lookup.

local reqs, n, i = {}, 0, 0

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local data = file:read("*a")
  file:close()
  for line in io.lines(args[2]) do
    local offset, length, head = line:match("^(%d+) (%d+) (%d+)$")
    offset, length = tonumber(offset), tonumber(length)
    local headers = {["Content-Type"] = "application/json"}
    if head ~= "0" then
      headers = {
        ["Content-Type"] = "application/octet-stream",
        ["Inference-Header-Content-Length"] = head,
      }
    end
    n = n + 1
    reqs[n] = wrk.format("POST", nil, headers, data:sub(offset + 1, offset + length))
  end
  assert(n > 0, "no request bodies in " .. args[2])
end

function request()
  i = i % n + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
