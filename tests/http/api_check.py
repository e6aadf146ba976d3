"""The HTTP API driven by Python's standard library (http.client), as a client nobody here
wrote would drive it. Run by tests/http_api.rs: `python3 api_check.py HOST:PORT`; exits 0 when
every check holds, else prints the first that does not and exits 1."""
import http.client
import json
import sys
import threading
from urllib.parse import quote

HOST = sys.argv[1]


def call(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(HOST, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data


def key(raw: bytes) -> str:
    return "/v1/kv/" + quote(raw, safe="")


def check(what, got, want):
    if got != want:
        print(f"FAILED {what}: got {got!r}, want {want!r}")
        sys.exit(1)


# put, get as bytes and as JSON, with the version as the ETag
s, h, b = call("PUT", key(b"py/a"), b"hello")
check("put status", s, 200)
check("put body", json.loads(b), {"version": 1})
s, h, b = call("GET", key(b"py/a"))
check("get status", s, 200)
check("get body", b, b"hello")
check("get etag", h["etag"], '"1"')
check("get type", h["content-type"], "application/octet-stream")
s, h, b = call("GET", key(b"py/a"), headers={"Accept": "application/json"})
check("get json", json.loads(b), {"key": "py/a", "value": "hello", "version": 1})

# any bytes, in the key (a slash, NUL, 0xff) and the value, round-trip byte for byte
raw_key, raw_value = b"py/\x00/\xff", bytes(range(256))
s, h, b = call("PUT", key(raw_key), raw_value)
check("binary put", s, 200)
s, h, b = call("GET", key(raw_key))
check("binary get", b, raw_value)
s, h, b = call("GET", key(raw_key), headers={"Accept": "application/json"})
check("binary json has base64 fields", sorted(json.loads(b)), ["key_base64", "value_base64", "version"])

# compare-and-set: If-Match on the version, 412 with the current one; If-None-Match: *
s, h, b = call("PUT", key(b"py/a"), b"stale", {"If-Match": '"7"'})
check("cas on a wrong version", (s, json.loads(b)), (412, {"version": 1}))
s, h, b = call("PUT", key(b"py/a"), b"swapped", {"If-Match": '"1"'})
check("cas on the version", (s, json.loads(b)), (200, {"version": 2}))
s, h, b = call("PUT", key(b"py/a"), b"x", {"If-None-Match": "*"})
check("create on an existing key", (s, json.loads(b)), (412, {"version": 2}))
s, h, b = call("PUT", key(b"py/new"), b"x", {"If-None-Match": "*"})
check("create on a new key", (s, json.loads(b)), (200, {"version": 1}))

# concurrent If-Match on one version: exactly one swaps
call("PUT", key(b"py/race"), b"0")
results = []
def racer(i):
    s, _, _ = call("PUT", key(b"py/race"), f"r{i}".encode(), {"If-Match": '"1"'})
    results.append(s)
threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
check("racing compare-and-sets", sorted(results), [200] + [412] * 7)

# delete: 200 with the new version, then 404 with the current one; a get of it 404 + ETag
s, h, b = call("DELETE", key(b"py/a"))
check("delete", (s, json.loads(b)), (200, {"version": 3}))
s, h, b = call("DELETE", key(b"py/a"))
check("delete again", (s, json.loads(b)), (404, {"version": 3}))
s, h, b = call("GET", key(b"py/a"))
check("get deleted", (s, h["etag"]), (404, '"3"'))
# a conditional delete: If-Match on another version is 412 with the current one (the value
# stays); on the current version 200; on a version with no value 404
call("PUT", key(b"py/d"), b"1")
call("PUT", key(b"py/d"), b"2")
s, h, b = call("DELETE", key(b"py/d"), None, {"If-Match": '"1"'})
check("delete stale", (s, json.loads(b), h["etag"]), (412, {"version": 2}, '"2"'))
s, h, b = call("GET", key(b"py/d"))
check("kept", (s, b), (200, b"2"))
s, h, b = call("DELETE", key(b"py/d"), None, {"If-Match": '"2"'})
check("delete current", (s, json.loads(b)), (200, {"version": 3}))
s, h, b = call("DELETE", key(b"py/d"), None, {"If-Match": '"3"'})
check("delete of no value", (s, json.loads(b)), (404, {"version": 3}))
s, h, b = call("DELETE", key(b"py/d"), None, {"If-None-Match": "*"})
check("delete with If-None-Match", s, 400)

# Idempotency-Key: a retry takes effect once and answers what the first did (a put, a
# compare-and-set that would not swap again, a delete); the same key for another request: 422
s, h, b = call("PUT", key(b"py/idem"), b"v", {"Idempotency-Key": "put-1"})
check("idempotent put", (s, json.loads(b)), (200, {"version": 1}))
s, h, b = call("PUT", key(b"py/idem"), b"v", {"Idempotency-Key": "put-1"})
check("its retry", (s, json.loads(b)), (200, {"version": 1}))
s, h, b = call("PUT", key(b"py/idem"), b"w", {"If-Match": '"1"', "Idempotency-Key": "cas-1"})
check("idempotent cas", (s, json.loads(b)), (200, {"version": 2}))
s, h, b = call("PUT", key(b"py/idem"), b"w", {"If-Match": '"1"', "Idempotency-Key": "cas-1"})
check("its retry", (s, json.loads(b)), (200, {"version": 2}))
s, h, b = call("DELETE", key(b"py/idem"), None, {"Idempotency-Key": "del-1"})
check("idempotent delete", (s, json.loads(b)), (200, {"version": 3}))
s, h, b = call("DELETE", key(b"py/idem"), None, {"Idempotency-Key": "del-1"})
check("its retry", (s, json.loads(b)), (200, {"version": 3}))
s, h, b = call("GET", key(b"py/idem"))
check("applied once each", (s, h["etag"]), (404, '"3"'))
s, h, b = call("PUT", key(b"py/idem"), b"other", {"Idempotency-Key": "put-1"})
check("a key reused", (s, json.loads(b)["class"]), (422, "bad_request"))
s, h, b = call("PUT", key(b"py/idem"), b"v", {"Idempotency-Key": "x" * 256})
check("a key too long", s, 400)

# the listing: paxkv list --json's shape, paged with next
s, h, b = call("GET", "/v1/kv?prefix=py%2F&limit=2")
page = json.loads(b)
check("list status", s, 200)
check("list page size", len(page["items"]), 2)
check("list next", page["next"], page["items"][-1].get("key"))
s, h, b = call("GET", "/v1/kv?prefix=py%2F&keys_only=true&after=" + quote(page["next"], safe=""))
rest = json.loads(b)
check("keys only", all("value" not in i for i in rest["items"]), True)

# errors: a value over the limit refused from its Content-Length (413) before the body is
# sent; the reserved prefix and an empty key refused (400); JSON bodies with a class
conn = http.client.HTTPConnection(HOST, timeout=30)
conn.putrequest("PUT", key(b"py/big"))
conn.putheader("Content-Length", str(2 << 20))
conn.endheaders()
r = conn.getresponse()
check("2 MiB value", (r.status, json.loads(r.read())["class"]), (413, "bad_request"))
conn.close()
s, h, b = call("PUT", key(b"\x00paxkv/members"), b"x")
check("reserved prefix", (s, json.loads(b)["class"]), (400, "bad_request"))
s, h, b = call("GET", "/v1/nothing")
check("unknown route", s, 404)
# the members and every member's status, as `paxkv member list --json` and `status --json`
s, h, b = call("GET", "/v1/members")
members = json.loads(b)
check("members", (s, len(members["members"]), {m["state"] for m in members["members"]}), (200, 5, {"voting"}))
s, h, b = call("GET", "/v1/status")
statuses = json.loads(b)
check("status", (s, len(statuses), {x["voting"] for x in statuses}, all(x["addr"] for x in statuses)), (200, 5, {True}, True))
# the console's charts: a rate and a p99 from two statuses; this script's requests counted
check("request buckets", all(len(x["request_buckets"]) == 16 and x["request_buckets"][-1] <= x["requests"] for x in statuses), True)
check("requests counted", sum(x["requests"] for x in statuses) > 0, True)

# leases: grant, show, keep alive, revoke; gone afterwards (404, class not_found)
s, h, b = call("POST", "/v1/leases", json.dumps({"ttl_s": 30}).encode())
lease = json.loads(b)
check("grant", (s, len(lease["id"]), lease["ttl_s"]), (200, 16, 30))
s, h, b = call("GET", "/v1/leases/" + lease["id"])
check("show", (s, json.loads(b)["version"]), (200, 1))
s, h, b = call("POST", "/v1/leases/" + lease["id"] + "/keepalive")
check("keepalive", (s, json.loads(b)["version"]), (200, 2))
# a key attached to it (?lease=), listed with ?keys=true, deleted by the revoke
s, h, b = call("PUT", key(b"py/leased") + "?lease=" + lease["id"], b"v")
check("a key attached to a lease", (s, json.loads(b)["version"]), (200, 1))
s, h, b = call("GET", "/v1/leases/" + lease["id"] + "?keys=true")
check("its keys", (s, json.loads(b)["keys"]), (200, [{"key": "py/leased"}]))
s, h, b = call("DELETE", "/v1/leases/" + lease["id"])
check("revoke", s, 200)
s, h, b = call("GET", key(b"py/leased"))
check("its key, deleted with it", (s, h.get("etag")), (404, '"2"'))
s, h, b = call("POST", "/v1/leases/" + lease["id"] + "/keepalive")
check("keepalive of a revoked lease", (s, json.loads(b)["class"]), (404, "not_found"))
s, h, b = call("GET", "/v1/leases/" + lease["id"])
check("show of a revoked lease", s, 404)
s, h, b = call("POST", "/v1/leases", json.dumps({"ttl_s": 0}).encode())
check("a TTL out of range", s, 400)
# 2^64 ms and 10 s: refused, not wrapped around into a 10 s lease.
s, h, b = call("POST", "/v1/leases", json.dumps({"ttl_s": 18446744073709562}).encode())
check("a TTL whose milliseconds overflow", s, 400)
s, h, b = call("GET", "/v1/leases/not-hex")
check("a bad id", s, 400)
s, h, b = call("PUT", key(b"py/late") + "?lease=" + lease["id"], b"v")
check("a key attached to a gone lease: nothing written", (s, json.loads(b)["class"]), (404, "not_found"))
s, h, b = call("GET", key(b"py/late"))
check("nothing written", s, 404)

# the OpenAPI document the node serves is the one in docs/
s, h, b = call("GET", "/v1/openapi.yaml")
check("openapi", (s, b.startswith(b"openapi: 3.1")), (200, True))
print("ok")
