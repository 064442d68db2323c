"""The WAPI stand-in answers as the WAPI documentation says NIOS does, errors included."""

from typing import Any, Dict, Iterator

import pytest
import requests

from tests.servers.wapi import WapiServer, start_wapi


@pytest.fixture(scope="module")
def wapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WapiServer]:
    with start_wapi(tmp_path_factory.mktemp("wapi")) as server:
        yield server


@pytest.fixture(scope="module")
def http(wapi: WapiServer) -> requests.Session:
    session = requests.Session()
    session.auth = (wapi.username, wapi.password)
    return session


def error(response: requests.Response, status: int, code: str) -> Dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"Error", "code", "text"} and body["code"] == code
    assert body["Error"].endswith(body["text"]) or body["text"] in body["Error"]
    return dict(body)


def test_bad_credentials_get_the_html_401(wapi: WapiServer) -> None:
    response = requests.get(wapi.url + "/network", auth=(wapi.username, "wrong"), timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert "Authorization Required" in response.text


def test_unsupported_version_is_refused(wapi: WapiServer, http: requests.Session) -> None:
    response = http.get(wapi.url.replace("v2.12", "v9.9") + "/network", timeout=5)
    assert response.status_code == 400 and response.text == "Version 9.9 not supported"


def test_create_returns_a_reference_and_duplicates_conflict(wapi: WapiServer,
                                                            http: requests.Session) -> None:
    created = http.post(wapi.url + "/network", json={"network": "10.99.0.0/24"}, timeout=5)
    assert created.status_code == 201
    ref = created.json()
    assert ref.startswith("network/") and ref.endswith(":10.99.0.0/24/default")
    body = error(http.post(wapi.url + "/network", json={"network": "10.99.0.0/24"}, timeout=5),
                 400, "Client.Ibap.Data.Conflict")
    assert body["Error"].startswith("AdmConDataError: None (IBDataConflictError")
    assert http.delete(wapi.url + "/" + ref, timeout=5).json() == ref
    error(http.delete(wapi.url + "/" + ref, timeout=5), 404, "Client.Ibap.Data.NotFound")


def test_unknown_and_unsearchable_fields_are_refused(wapi: WapiServer,
                                                     http: requests.Session) -> None:
    assert "Unknown argument/field: 'colour'" in error(
        http.get(wapi.url + "/record:a", params={"colour": "red"}, timeout=5),
        400, "Client.Ibap.Proto")["text"]
    assert "not searchable: ttl" in error(
        http.get(wapi.url + "/record:a", params={"ttl": "5"}, timeout=5),
        400, "Client.Ibap.Proto")["text"]
    assert "missing: name" in error(
        http.post(wapi.url + "/record:host", json={"ipv4addrs": []}, timeout=5),
        400, "Client.Ibap.Proto")["text"]


def test_records_need_a_zone_and_defined_extensible_attributes(
        wapi: WapiServer, http: requests.Session) -> None:
    assert "A parent was not found" in error(
        http.post(wapi.url + "/record:a", json={"name": "x.nowhere.test", "ipv4addr": "10.1.1.1"},
                  timeout=5), 400, "Client.Ibap.Data.Conflict")["text"]
    http.post(wapi.url + "/zone_auth", json={"fqdn": "ea.test"}, timeout=5).raise_for_status()
    assert error(http.post(wapi.url + "/record:a", json={
        "name": "x.ea.test", "ipv4addr": "10.1.1.1", "extattrs": {"Site": {"value": "A"}}},
        timeout=5), 400, "Client.Ibap.Proto")["text"] == "Unknown extensible attribute: Site"


def test_extattr_search_return_fields_and_paging(wapi: WapiServer,
                                                 http: requests.Session) -> None:
    http.post(wapi.url + "/extensibleattributedef", json={"name": "Tier", "type": "STRING"},
              timeout=5).raise_for_status()
    http.post(wapi.url + "/zone_auth", json={"fqdn": "page.test"}, timeout=5).raise_for_status()
    for n in range(5):
        http.post(wapi.url + "/record:a", json={
            "name": "h%d.page.test" % n, "ipv4addr": "10.2.0.%d" % (n + 1),
            "extattrs": {"Tier": {"value": "gold" if n % 2 else "bronze"}}},
            timeout=5).raise_for_status()
    gold = http.get(wapi.url + "/record:a", params={"*Tier": "gold"}, timeout=5).json()
    assert sorted(r["name"] for r in gold) == ["h1.page.test", "h3.page.test"]
    assert set(gold[0]) == {"_ref", "ipv4addr", "name", "view"}, "basic fields by default"
    (one,) = http.get(wapi.url + "/record:a", params={"name": "h1.page.test",
                                                     "_return_fields": "extattrs"},
                      timeout=5).json()
    assert one == {"_ref": one["_ref"], "extattrs": {"Tier": {"value": "gold"}}}
    tagged = http.get(wapi.url + "/record:a", params={"*Tier~": "."}, timeout=5).json()
    assert len(tagged) == 5
    assert "Result set too large" in error(
        http.get(wapi.url + "/record:a", params={"_max_results": "-2"}, timeout=5),
        400, "Client.Ibap.Proto")["text"]
    pages, params = [], {"*Tier~": ".", "_paging": "1", "_max_results": "2",
                         "_return_as_object": "1"}
    while True:
        page = http.get(wapi.url + "/record:a", params=params, timeout=5).json()
        pages.append(len(page["result"]))
        if "next_page_id" not in page:
            break
        params["_page_id"] = page["next_page_id"]
    assert pages == [2, 2, 1]


def test_next_available_ip_skips_used_addresses(wapi: WapiServer,
                                                http: requests.Session) -> None:
    http.post(wapi.url + "/network", json={"network": "10.3.0.0/29"},
              timeout=5).raise_for_status()
    host = {"name": "n1.example", "configure_for_dns": False,
            "ipv4addrs": [{"ipv4addr": "func:nextavailableip:10.3.0.0/29,default"}]}
    first = http.post(wapi.url + "/record:host", params={"_return_fields": "ipv4addrs"},
                      json=host, timeout=5).json()
    second = http.post(wapi.url + "/record:host", params={"_return_fields": "ipv4addrs"},
                       json=dict(host, name="n2.example"), timeout=5).json()
    assert [first["ipv4addrs"][0]["ipv4addr"], second["ipv4addrs"][0]["ipv4addr"]] == \
        ["10.3.0.1", "10.3.0.2"]


def test_the_request_object_answers_each_call_and_a_failing_list_writes_nothing(
        wapi: WapiServer, http: requests.Session) -> None:
    """``request``: several searches in one POST, each answered in order; a list whose
    last call fails keeps nothing its first call created."""
    http.post(wapi.url + "/network", json={"network": "10.98.0.0/24"}, timeout=5)
    answered = http.post(wapi.url + "/request", json=[
        {"method": "GET", "object": "network", "data": {"network": "10.98.0.0/24"},
         "args": {"_return_fields": "network"}},
        {"method": "GET", "object": "network", "data": {"network": "10.97.0.0/24"}}],
        timeout=5)
    assert answered.status_code == 200, answered.text
    (found,), missing = answered.json()
    assert found["network"] == "10.98.0.0/24" and missing == []
    error(http.post(wapi.url + "/request", json=[
        {"method": "POST", "object": "network", "data": {"network": "10.96.0.0/24"}},
        {"method": "POST", "object": "network", "data": {"network": "10.98.0.0/24"}}],
        timeout=5), 400, "Client.Ibap.Data.Conflict")
    assert http.get(wapi.url + "/network", params={"network": "10.96.0.0/24"},
                    timeout=5).json() == [], "the list's first create was kept"
    assert "only POST" in error(http.get(wapi.url + "/request", timeout=5), 400,
                                "Client.Ibap.Proto")["text"]
