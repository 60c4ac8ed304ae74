"""Real processes over real sockets: gunicorn with several workers, the `make run` runtime,
server faults (kill -9, timeouts), Redis with ACLs and TLS, the README walkthrough."""
