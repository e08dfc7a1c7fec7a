#!/usr/bin/env python3
"""A verifying STS front for the tests, between the sidecar and moto.

Why it exists: moto does not check query-string (presigned) signatures, and it routes a
presigned GET without an `Authorization` header to its S3 backend. Real STS does both. This
front does exactly what moto lacks and nothing else:

1. recomputes the SigV4 presigned signature with botocore from the caller's secret (the
   tests hand it the secrets of the credentials they created, in --secrets), over the
   headers the URL says were signed, as the request arrived (so a wrong `x-k8s-aws-id` fails,
   as on real STS);
2. refuses a bad or stale signature with STS's own error document (403);
3. otherwise asks moto who the caller is, with header auth, and answers in the JSON shape
   real STS uses for `Accept: application/json`.

`GET /__calls` tells how many STS requests arrived, so the tests can prove that a refused
token cost no STS call.

`POST /__answer` with `{"status": N, "document": {...}}` queues one answer that the next
request whose signature verifies gets instead of moto's: the cases neither moto nor a test
account can produce on demand (STS throttling, the account root, a partition other than
`aws`, a malformed `UserId`). The signature is still checked first, as STS would.
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import boto3
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import EndpointConnectionError

WINDOW_SECONDS = 15 * 60
calls = 0
calls_lock = threading.Lock()
queued = []


def sts_error(code, message):
    return {"Error": {"Code": code, "Message": message, "Type": "Sender"},
            "RequestId": "00000000-0000-0000-0000-000000000000"}


class Front(BaseHTTPRequestHandler):
    def do_POST(self):
        if urlsplit(self.path).path != "/__answer":
            return self.reply(404, sts_error("NotFound", "only /__answer takes POST"))
        length = int(self.headers.get("Content-Length", "0"))
        with calls_lock:
            queued.append(json.loads(self.rfile.read(length)))
        self.reply(200, {"queued": len(queued)})

    def do_GET(self):
        global calls
        parts = urlsplit(self.path)
        if parts.path == "/__calls":
            return self.reply(200, {"calls": calls})
        with calls_lock:
            calls += 1
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            access_key, _date, region, service, _ = params["X-Amz-Credential"].split("/")
            signed = params["X-Amz-SignedHeaders"].split(";")
            amz_date = params["X-Amz-Date"]
            claimed = params["X-Amz-Signature"]
        except (KeyError, ValueError):
            return self.reply(400, sts_error("InvalidQueryParameter", "not a presigned request"))
        with open(self.server.secrets_file) as f:
            secrets = json.load(f)
        if access_key not in secrets:
            return self.reply(403, sts_error("InvalidClientTokenId", "unknown access key"))
        secret, session_token = secrets[access_key]
        signed_at = time.mktime(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")) - time.timezone
        if time.time() - signed_at > WINDOW_SECONDS:
            return self.reply(403, sts_error("ExpiredToken", "Signature expired"))

        unsigned_query = "&".join(
            p for p in parts.query.split("&") if not p.startswith("X-Amz-Signature="))
        headers = {h: self.headers[h] for h in signed if h != "host" and self.headers[h] is not None}
        request = AWSRequest(method="GET",
                             url=f"http://{self.headers['Host']}{parts.path}?{unsigned_query}",
                             headers=headers)
        request.context["timestamp"] = amz_date
        auth = SigV4QueryAuth(Credentials(access_key, secret, session_token), service, region,
                              expires=int(params.get("X-Amz-Expires", "60")))
        canonical = auth.canonical_request(request)
        expected = auth.signature(auth.string_to_sign(request, canonical), request)
        if expected != claimed:
            return self.reply(403, sts_error(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided."))

        with calls_lock:
            scripted = queued.pop(0) if queued else None
        if scripted is not None:
            return self.reply(scripted["status"], scripted["document"])

        client = boto3.client("sts", endpoint_url=self.server.moto, region_name=region,
                              aws_access_key_id=access_key, aws_secret_access_key=secret,
                              aws_session_token=session_token)
        try:
            who = client.get_caller_identity()
        except EndpointConnectionError:
            return self.reply(503, sts_error("ServiceUnavailable", "moto is down"))
        result = {"Account": who["Account"], "Arn": who["Arn"], "UserId": who["UserId"]}
        self.reply(200, {"GetCallerIdentityResponse": {
            "GetCallerIdentityResult": result,
            "ResponseMetadata": {"RequestId": who["ResponseMetadata"]["RequestId"]}}})

    def reply(self, status, document):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--moto", required=True)
    parser.add_argument("--secrets", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Front)
    server.moto = args.moto
    server.secrets_file = args.secrets
    server.serve_forever()


if __name__ == "__main__":
    main()
