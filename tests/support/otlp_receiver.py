"""A real OTLP/gRPC trace receiver on loopback, for the trace tests.

Built on the OpenTelemetry project's own protocol package (`opentelemetry-proto`) and `grpcio`:
it serves `opentelemetry.proto.collector.trace.v1.TraceService/Export` on 127.0.0.1 at a port
the OS picks, prints that port on its first line of stdout, and appends every span it receives
to the file named by argv[1], one JSON object per line:
{"service", "name", "trace_id", "span_id", "parent_span_id", "kind", "status_code",
 "status_message", "attributes": {key: value}}.
"""

import json
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

OUT = sys.argv[1]


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        lines = []
        for resource_spans in request.resource_spans:
            resource = {a.key: value_of(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    lines.append(json.dumps({
                        "service": resource.get("service.name"),
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "kind": span.kind,
                        "status_code": span.status.code,
                        "status_message": span.status.message,
                        "attributes": {a.key: value_of(a.value) for a in span.attributes},
                    }))
        with open(OUT, "a", encoding="utf-8") as out:
            for line in lines:
                out.write(line + "\n")
        return trace_service_pb2.ExportTraceServiceResponse()


server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
server.wait_for_termination()
