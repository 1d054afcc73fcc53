"""A tiny HTTP file server for NestBench's fetch tests (python3 range_server.py DIR PORTFILE LOGFILE).

Serves files from DIR on 127.0.0.1 (a free port, written to PORTFILE) with HTTP Range support.
A path under /drop/ serves the same file, but its first full (non-range) response announces the
whole length and closes the connection after half the bytes, as a dropped connection does.
Every request line and Range header is appended to LOGFILE.
"""
import http.server
import os
import sys

ROOT, PORTFILE, LOGFILE = sys.argv[1], sys.argv[2], sys.argv[3]
dropped = set()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        rng = self.headers.get("Range")
        with open(LOGFILE, "a") as log:
            log.write(f"{self.path} {rng}\n")
        drop = self.path.startswith("/drop/")
        name = self.path[len("/drop/"):] if drop else self.path[1:]
        path = os.path.join(ROOT, os.path.basename(name))
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = open(path, "rb").read()
        start = 0
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if drop and not rng and name not in dropped:
            dropped.add(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(PORTFILE + ".tmp", PORTFILE)
server.serve_forever()
