"""A stand-in ChatFlow gateway for the API fuzzer in .ci/run: answers every GET with
success, as the real one does for a valid call (DESIGN §8). The tests use a much
more faithful fake (tests/common/gateway.rs); this one only keeps `POST
/api/v1/send` from failing for want of a gateway."""

import http.server
import json
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"success": True, "message": "Message sent successfully!", "response": {}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
