"""The demo's alert receiver: a local HTTP server that answers 200 to every POST and appends its JSON body to a file,
as Slack or Alertmanager would receive it. Prints its port on the first line of stdout.

    python sample_data/webhook_receiver.py alerts.jsonl &
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> int:
    out = sys.argv[1]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with open(out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(json.loads(body or b"null")) + "\n")
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
