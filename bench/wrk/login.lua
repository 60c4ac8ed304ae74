-- POST /api/v1/auth/login with BENCH_EMAIL / BENCH_PASSWORD (argon2id at production cost).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email": "' .. os.getenv("BENCH_EMAIL") .. '", "password": "' .. os.getenv("BENCH_PASSWORD") .. '"}'
