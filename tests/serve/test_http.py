"""Raw HTTP against the server (urllib only): the error body, status codes, limits, docs,
runs-table formats, and a runs table sent as CSV text or JSON records."""

import json
import urllib.error
import urllib.request

import pytest

DOMAINS = ["code", "legal", "web"]
JSON = {"Content-Type": "application/json"}


def call(url: str, method: str = "GET", body=None, headers=None) -> tuple[int, dict, bytes]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={**JSON, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def error(status: int, headers: dict, raw: bytes) -> tuple[int, str, str]:
    assert headers["content-type"].startswith("application/json")
    body = json.loads(raw)
    assert set(body) == {"error", "type"} and "\n" not in body["error"]
    return status, body["type"], body["error"]


@pytest.fixture(scope="module")
def study_url(server) -> str:
    status, _, _ = call(f"{server.url}/studies", "POST", {"name": "http", "domains": DOMAINS, "seed": 2})
    assert status == 200
    return f"{server.url}/studies/http"


def test_ask_tell_and_reads(server, study_url):
    status, _, raw = call(f"{study_url}/ask", "POST", {"n": 2})
    assert status == 200
    trials = json.loads(raw)["trials"]
    assert [t["state"] for t in trials] == ["PENDING", "PENDING"] and len({t["trial_id"] for t in trials}) == 2
    assert set(trials[0]["mixture"]) == set(DOMAINS)
    status, _, raw = call(f"{study_url}/tell", "POST", {"trial_id": trials[0]["trial_id"],
                                                        "result": {"code": 3.0, "legal": 2.5, "web": 2.0}})
    assert status == 200 and json.loads(raw)["trial"]["value"] == pytest.approx(2.5)
    status, _, raw = call(f"{study_url}/tell", "POST", {"trial_id": trials[1]["trial_id"], "error": "OOM"})
    assert json.loads(raw)["trial"]["state"] == "FAILED" and json.loads(raw)["trial"]["error"] == "OOM"
    assert json.loads(call(f"{study_url}/best")[2])["trial"]["trial_id"] == trials[0]["trial_id"]
    assert json.loads(call(f"{study_url}/counts")[2])["COMPLETE"] == 1
    assert json.loads(call(f"{study_url}/recommend")[2])["predicted"] == pytest.approx(2.5)
    assert json.loads(call(f"{study_url}/trials/{trials[1]['trial_id']}")[2])["trial"]["error"] == "OOM"
    assert len(json.loads(call(f"{study_url}/trials")[2])["trials"]) == 2
    info = json.loads(call(study_url)[2])
    assert info["meta"]["domains"] == DOMAINS and info["counts"]["FAILED"] == 1
    assert "http" in json.loads(call(f"{server.url}/studies")[2])["studies"]
    status, headers, raw = call(f"{study_url}/runs.csv")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert raw.decode().splitlines()[0].startswith("run,state,searcher,phase,label,w.code,w.legal,w.web")
    records = json.loads(call(f"{study_url}/runs.json")[2])
    assert [r["run"] for r in records] == [0, 1] and records[0]["objective"] == pytest.approx(2.5)
    split = json.loads(call(f"{study_url}/runs.json?orient=split")[2])
    assert split["columns"][:2] == ["run", "state"] and len(split["data"]) == 2


def test_runs_table_as_csv_or_records(server):
    call(f"{server.url}/studies", "POST", {"name": "http-warm", "domains": DOMAINS, "floors": {"code": 0.1}})
    url = f"{server.url}/studies/http-warm"
    csv = "w.code,w.legal,w.web,loss.code,loss.legal,loss.web\n0.2,0.3,0.5,3,2,1\n0.5,0.25,0.25,2,2,2\n"
    status, _, raw = call(f"{url}/completed", "POST", {"csv": csv, "source": "past.csv"})
    assert status == 200 and [t["value"] for t in json.loads(raw)["trials"]] == pytest.approx([2.0, 2.0])
    rec = [{"w.code": 0.4, "w.legal": 0.6, "objective": 1.5}]
    status, _, raw = call(f"{url}/completed", "POST", {"records": rec})
    assert status == 200 and json.loads(raw)["trials"][0]["mixture"] == {"code": 0.4, "legal": 0.6, "web": 0.0}
    assert error(*call(f"{url}/completed", "POST", {"csv": "w.code,w.x\n0.5,0.5\n", "source": "bad.csv"})) == \
        (400, "RunsTableError", "bad.csv: w. columns ['x'] are not domains of study 'http-warm' "
                                "(allowed: code, legal, web)")
    assert error(*call(f"{url}/completed", "POST", {"csv": csv, "records": rec}))[:2] == (400, "RunsTableError")
    info = json.loads(call(url)[2])
    assert info["meta"]["lower"] == [0.1, 0.0, 0.0] and info["counts"]["COMPLETE"] == 3


def test_bad_requests(server, study_url):
    before = json.loads(call(f"{study_url}/counts")[2])
    assert error(*call(f"{study_url}/ask", "POST", b"{not json")) == \
        (400, "UserError", "request body is not valid JSON (Expecting property name enclosed in double quotes)")
    status, kind, msg = error(*call(f"{study_url}/ask", "POST", {"n": 100000}))
    assert (status, kind) == (400, "UserError") and "limit of 256 per request" in msg
    assert error(*call(f"{study_url}/ask", "POST", {"n": 0})) == (400, "UserError", "ask: n=0 must be a positive integer")
    assert error(*call(f"{study_url}/ask", "POST", {"n": 1, "typo": 2})) == \
        (422, "UserError", "body.typo: Extra inputs are not permitted")
    assert error(*call(f"{study_url}/ask", "POST", [1, 2]))[:2] == (422, "UserError")
    assert error(*call(f"{study_url}/tell", "POST", {"result": 2.0}))[:2] == (422, "UserError")
    status, kind, msg = error(*call(f"{study_url}/ask", "POST", b'{"n": 1}' + b" " * (9 * 2**20)))
    assert (status, kind) == (413, "UserError") and "larger than this server's limit" in msg
    assert error(*call(f"{study_url}/enqueue", "POST", {"mixture": {"code": 0.5, "legal": 0.6}})) == \
        (400, "MixtureError", "enqueue: weights sum to 1.1; they must sum to 1 (within 1e-06)")
    assert error(*call(f"{study_url}/tell", "POST", {"trial_id": 999, "result": 1.0}))[:2] == (404, "NotFoundError")
    assert error(*call(f"{study_url}/trials/999"))[:2] == (404, "NotFoundError")
    assert error(*call(f"{server.url}/studies/nope/ask", "POST", {"n": 1}))[:2] == (404, "NotFoundError")
    assert error(*call(f"{server.url}/studies", "POST", {"name": "http", "domains": DOMAINS}))[:2] == \
        (409, "AlreadyExistsError")
    assert error(*call(f"{server.url}/studies", "POST", {"name": "x", "domains": DOMAINS, "searcher": "nope"}))[:2] == \
        (400, "ConfigError")
    assert error(*call(f"{server.url}/nothing"))[:2] == (404, "HTTPError")
    assert json.loads(call(f"{study_url}/counts")[2]) == before  # nothing written


def test_docs_and_health(server):
    status, headers, raw = call(f"{server.url}/docs")
    assert status == 200 and b"swagger" in raw.lower()
    spec = json.loads(call(f"{server.url}/openapi.json")[2])
    assert {"/studies", "/studies/{name}/ask", "/studies/{name}/tell"} <= set(spec["paths"])
    assert json.loads(call(f"{server.url}/health")[2])["max_body_bytes"] == 8 * 2**20
