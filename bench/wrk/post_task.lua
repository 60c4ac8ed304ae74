-- POST /api/v1/tasks with a small JSON body, as the user in BENCH_TOKEN.
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title": "Benchmark task", "priority": "high", "tags": ["bench"], "due_at": "2027-01-15T09:00:00Z"}'
