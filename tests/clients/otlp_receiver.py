"""An OTLP/HTTP trace receiver for the OpenTelemetry export test.

Listens on 127.0.0.1 (a free port, printed first as `port N`), decodes each
POST /v1/traces body with the OpenTelemetry project's own protobuf messages
(opentelemetry-proto), and prints one JSON line per span: its name, the
service name of its resource, and its attributes.

    python otlp_receiver.py
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            service = {a.key: value(a.value) for a in rs.resource.attributes}.get(
                "service.name"
            )
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = {a.key: value(a.value) for a in span.attributes}
                    line = {"name": span.name, "service": service, "attributes": attrs}
                    print(json.dumps(line), flush=True)
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Handler)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
