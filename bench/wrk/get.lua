-- GET with the bearer token from BENCH_TOKEN (any path given to wrk).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
