-- GET or PATCH /api/v1/tasks/{id} over the ids in BENCH_IDS (comma-separated): each wrk
-- thread takes its own share of the ids and cycles through them. BENCH_METHOD=PATCH flips the
-- priority on each visit, so every PATCH changes its task (a real write, version + 1).
local threads = 0
function setup(thread)
  thread:set("index", threads)
  threads = threads + 1
end

local token = os.getenv("BENCH_TOKEN")
local method = os.getenv("BENCH_METHOD") or "GET"
local bodies = {'{"priority": "high"}', '{"priority": "low"}'}
local mine, counter = {}, 0

function init(args)
  local all, n, share = {}, 0, tonumber(os.getenv("BENCH_THREADS") or "2")
  for id in string.gmatch(os.getenv("BENCH_IDS"), "[^,]+") do
    if n % share == index then all[#all + 1] = id end
    n = n + 1
  end
  mine = all
end

function request()
  counter = counter + 1
  local id = mine[(counter % #mine) + 1]
  local headers = {["Authorization"] = "Bearer " .. token}
  local body = nil
  if method == "PATCH" then
    headers["Content-Type"] = "application/json"
    body = bodies[(math.floor(counter / #mine) % 2) + 1]
  end
  return wrk.format(method, "/api/v1/tasks/" .. id, headers, body)
end
