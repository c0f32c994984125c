"""Every REST method of the official Python IoTHubRegistryManager, IoTHubConfigurationManager,
IoTHubHttpRuntimeManager and IoTHubJobManager (azure-iot-hub 2.7.0), unmodified, against the
iothub-emulator, with the values and failures the service gives.

Jobs: IOTHUB_INTEROP_BLOB_IN and IOTHUB_INTEROP_BLOB_OUT are container SAS URLs in Azurite
(the storage account of import and export jobs); IOTHUB_INTEROP_NO_BLOB=1 leaves the
import/export checks out (no Azurite).

Environment: IOTHUB_CONNECTION_STRING (the emulator's iothubowner connection string),
REQUESTS_CA_BUNDLE (the emulator's CA, for HTTPS) and AMQP_CA_BUNDLE (the same CA, for the
cloud-to-device AMQP connection on port 5671: uamqp reads only certifi's bundle, so the
script points certifi.where at it; the SDK itself is unmodified). Prints one line per check
and then "python: N passed, M failed"; exits non-zero on any failure.

Azure AD: azure-identity's ClientSecretCredential gets its tokens from the emulator, which is
also a Microsoft Entra ID look-alike: AZURE_TENANT_ID, IOTHUB_AAD_AUTHORITY (the emulator's
https://host), and IOTHUB_AAD_CONTRIBUTOR_ID/_SECRET and IOTHUB_AAD_READER_ID/_SECRET (app
registrations with IoT Hub Data Contributor and IoT Hub Data Reader). IOTHUB_INTEROP_NO_AAD=1
leaves those checks out (no azure-identity installed).
"""

import base64
import datetime
import json
import os
import sys
import time
import traceback
import uuid

import certifi
import requests

# uamqp (the AMQP library of azure-iot-hub 2.7.0) trusts only certifi's bundle, not the system
# store or REQUESTS_CA_BUNDLE, and the SDK passes no `verify=`: point certifi at the emulator's CA.
certifi.where = lambda: os.environ["AMQP_CA_BUNDLE"]

from azure.iot.hub import (  # noqa: E402
    IoTHubConfigurationManager,
    IoTHubHttpRuntimeManager,
    IoTHubJobManager,
    IoTHubRegistryManager,
)
from azure.iot.hub.models import (  # noqa: E402
    AuthenticationMechanism,
    CloudToDeviceMethod,
    Configuration,
    ConfigurationContent,
    ConfigurationMetrics,
    ConfigurationQueriesTestInput,
    ExportImportDevice,
    JobProperties,
    JobRequest,
    QuerySpecification,
    SymmetricKey,
    Twin,
    TwinProperties,
)
from msrest.exceptions import HttpOperationError  # noqa: E402

AAD = os.environ.get("IOTHUB_INTEROP_NO_AAD") != "1"
if AAD:
    from azure.core.exceptions import ClientAuthenticationError  # noqa: E402
    from azure.identity import ClientSecretCredential  # noqa: E402

CS = os.environ["IOTHUB_CONNECTION_STRING"]
CA = os.environ["REQUESTS_CA_BUNDLE"]
HOST = dict(p.split("=", 1) for p in CS.split(";"))["HostName"]
CONTROL = "https://%s/_emulator" % HOST
RUN = uuid.uuid4().hex[:8]
KEY1 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
KEY2 = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
THUMB1 = "A" * 40
THUMB2 = "B" * 40

rm = IoTHubRegistryManager.from_connection_string(CS)
results = []


def dev(name):
    return "py-%s-%s" % (RUN, name)


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
            print("ok   %s" % name)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
            results.append((name, e))
            print("FAIL %s: %r" % (name, e))
            traceback.print_exc()
        return fn

    return wrap


def expect_error(fn, status, code=None):
    try:
        fn()
    except HttpOperationError as e:
        assert e.response.status_code == status, (e.response.status_code, e.response.text)
        if code is not None:
            assert e.response.headers.get("iothub-errorcode") == code, e.response.headers
        return e
    raise AssertionError("expected HTTP %d, got success" % status)


def control(method, path, body=None):
    r = requests.request(method, CONTROL + path, json=body, verify=CA, timeout=30)
    assert r.status_code < 300, (r.status_code, r.text)
    return r


@check("create_device_with_sas and get_device")
def _():
    d = rm.create_device_with_sas(dev("sas"), KEY1, KEY2, "enabled")
    assert d.device_id == dev("sas")
    assert d.status == "enabled"
    assert d.authentication.type == "sas"
    assert d.authentication.symmetric_key.primary_key == KEY1
    assert d.connection_state == "Disconnected"
    assert d.cloud_to_device_message_count == 0
    assert d.capabilities.iot_edge is False
    got = rm.get_device(dev("sas"))
    assert got.etag == d.etag and got.generation_id == d.generation_id


@check("create an existing device: 409 DeviceAlreadyExists")
def _():
    expect_error(lambda: rm.create_device_with_sas(dev("sas"), KEY1, KEY2, "enabled"), 409, "DeviceAlreadyExists")


@check("update_device_with_sas: stale etag 412, then current etag and '*'")
def _():
    expect_error(
        lambda: rm.update_device_with_sas(dev("sas"), "c3RhbGU=", KEY1, KEY2, "disabled"), 412, "PreconditionFailed"
    )
    current = rm.get_device(dev("sas")).etag
    d = rm.update_device_with_sas(dev("sas"), current, KEY2, KEY1, "disabled", status_reason="maintenance")
    assert d.status == "disabled" and d.status_reason == "maintenance"
    assert d.authentication.symmetric_key.primary_key == KEY2
    assert d.etag != current
    d = rm.update_device_with_sas(dev("sas"), None, KEY1, KEY2, "enabled")
    assert d.status == "enabled"


@check("create_device_with_x509 and update_device_with_x509")
def _():
    d = rm.create_device_with_x509(dev("x509"), THUMB1, THUMB2, "enabled")
    assert d.authentication.type == "selfSigned"
    assert d.authentication.x509_thumbprint.primary_thumbprint == THUMB1
    d = rm.update_device_with_x509(dev("x509"), d.etag, THUMB2, THUMB1, "enabled")
    assert d.authentication.x509_thumbprint.primary_thumbprint == THUMB2


@check("create_device_with_certificate_authority and update (edge, scopes)")
def _():
    d = rm.create_device_with_certificate_authority(dev("ca"), "enabled", iot_edge=True)
    assert d.authentication.type == "certificateAuthority"
    assert d.capabilities.iot_edge is True
    assert d.device_scope.startswith("ms-azure-iot-edge://")
    child = rm.create_device_with_certificate_authority(
        dev("child"), "enabled", device_scope=d.device_scope, parent_scopes=d.device_scope
    )
    assert child.parent_scopes == [d.device_scope]
    d = rm.update_device_with_certificate_authority(dev("ca"), None, "disabled", iot_edge=True)
    assert d.status == "disabled"


@check("get_devices with and without a maximum")
def _():
    assert len(rm.get_devices(max_number_of_devices=2)) == 2
    ids = {d.device_id for d in rm.get_devices()}
    assert {dev("sas"), dev("x509"), dev("ca"), dev("child")} <= ids


@check("get_device of a missing device: 404 DeviceNotFound")
def _():
    e = expect_error(lambda: rm.get_device(dev("missing")), 404, "DeviceNotFound")
    assert json.loads(e.response.text)["Message"].startswith("ErrorCode:DeviceNotFound;")


@check("modules: create with sas, x509 and CA, get, list, update, conflict, delete")
def _():
    m = rm.create_module_with_sas(dev("sas"), "m-sas", "owner", KEY1, KEY2)
    assert m.module_id == "m-sas" and m.managed_by == "owner"
    m2 = rm.create_module_with_x509(dev("sas"), "m-x509", None, THUMB1, THUMB2)
    assert m2.authentication.type == "selfSigned"
    m3 = rm.create_module_with_certificate_authority(dev("sas"), "m-ca", None)
    assert m3.authentication.type == "certificateAuthority"
    assert rm.get_module(dev("sas"), "m-sas").etag == m.etag
    assert sorted(x.module_id for x in rm.get_modules(dev("sas"))) == ["m-ca", "m-sas", "m-x509"]
    expect_error(lambda: rm.create_module_with_sas(dev("sas"), "m-sas", None, KEY1, KEY2), 409,
                 "ModuleAlreadyExistsOnDevice")
    expect_error(lambda: rm.update_module_with_sas(dev("sas"), "m-sas", None, "c3RhbGU=", KEY1, KEY2), 412)
    u = rm.update_module_with_sas(dev("sas"), "m-sas", "other", m.etag, KEY2, KEY1)
    assert u.managed_by == "other" and u.authentication.symmetric_key.primary_key == KEY2
    u = rm.update_module_with_x509(dev("sas"), "m-x509", None, None, THUMB2, THUMB1)
    assert u.authentication.x509_thumbprint.primary_thumbprint == THUMB2
    u = rm.update_module_with_certificate_authority(dev("sas"), "m-ca", "ca-owner", m3.etag)
    assert u.managed_by == "ca-owner"
    rm.delete_module(dev("sas"), "m-x509")
    rm.delete_module(dev("sas"), "m-ca", etag=u.etag)
    expect_error(lambda: rm.get_module(dev("sas"), "m-x509"), 404, "ModuleNotFound")
    edge_modules = sorted(x.module_id for x in rm.get_modules(dev("ca")))
    assert edge_modules == ["$edgeAgent", "$edgeHub"], edge_modules


@check("twins: get, update with etags, replace")
def _():
    t = rm.get_twin(dev("sas"))
    assert t.device_id == dev("sas") and t.version == 1
    patch = Twin(tags={"team": "py", "n": 1}, properties=TwinProperties(desired={"rate": 5}))
    t2 = rm.update_twin(dev("sas"), patch, t.etag)
    assert t2.tags == {"team": "py", "n": 1}
    assert t2.properties.desired["rate"] == 5 and t2.properties.desired["$version"] == 2
    expect_error(lambda: rm.update_twin(dev("sas"), patch, t.etag), 412, "PreconditionFailed")
    t3 = rm.update_twin(dev("sas"), Twin(tags={"n": None}))
    assert t3.tags == {"team": "py"}
    t4 = rm.replace_twin(dev("sas"), Twin(tags={"team": "py"}, properties=TwinProperties(desired={"mode": "eco"})))
    assert "rate" not in t4.properties.desired and t4.properties.desired["mode"] == "eco"
    assert t4.version == 4


@check("module twins: get, update, replace")
def _():
    t = rm.get_module_twin(dev("sas"), "m-sas")
    assert t.module_id == "m-sas"
    t2 = rm.update_module_twin(dev("sas"), "m-sas", Twin(properties=TwinProperties(desired={"a": 1})), t.etag)
    assert t2.properties.desired["a"] == 1
    expect_error(lambda: rm.update_module_twin(dev("sas"), "m-sas", Twin(tags={"x": 1}), t.etag), 412)
    t3 = rm.replace_module_twin(dev("sas"), "m-sas", Twin(tags={"k": "v"}))
    assert t3.tags == {"k": "v"} and "a" not in t3.properties.desired


@check("reported properties from the device appear in the twin")
def _():
    control("PATCH", "/devices/%s/reported" % dev("sas"), {"temp": 21.5})
    t = rm.get_twin(dev("sas"))
    assert t.properties.reported["temp"] == 21.5


@check("query_iot_hub: paging with continuation tokens, projections, COUNT")
def _():
    for i in range(5):
        rm.create_device_with_sas(dev("q%d" % i), KEY1, KEY2, "enabled")
        rm.update_twin(dev("q%d" % i), Twin(tags={"batch": RUN, "i": i}))
    spec = QuerySpecification(query="SELECT * FROM devices WHERE tags.batch = '%s'" % RUN)
    seen, token, pages = [], None, 0
    while True:
        page = rm.query_iot_hub(spec, token, 2)
        pages += 1
        assert page.type == "twin", page.type
        seen += [t.device_id for t in page.items]
        token = page.continuation_token
        if token is None:
            break
    assert seen == [dev("q%d" % i) for i in range(5)], seen
    assert pages == 3
    count = rm.query_iot_hub(QuerySpecification(query="SELECT COUNT() AS n FROM devices WHERE tags.batch = '%s'" % RUN))
    assert count.items[0].additional_properties["n"] == 5
    e = expect_error(lambda: rm.query_iot_hub(QuerySpecification(query="SELECT * FROM")), 400)
    assert "ErrorCode:" in e.response.text


@check("statistics: registry and service")
def _():
    stats = rm.get_device_registry_statistics()
    assert stats.total_device_count >= 9
    assert stats.enabled_device_count + stats.disabled_device_count == stats.total_device_count
    before = rm.get_service_statistics().connected_device_count
    control("POST", "/devices/%s/connect" % dev("sas"))
    assert rm.get_service_statistics().connected_device_count == before + 1


@check("invoke_device_method: offline 404103, answered, slow 504101")
def _():
    e = expect_error(
        lambda: rm.invoke_device_method(dev("x509"), CloudToDeviceMethod(method_name="reboot")), 404, "DeviceNotOnline"
    )
    assert json.loads(json.loads(e.response.text)["Message"])["errorCode"] == 404103
    control("PUT", "/devices/%s/methods/reboot" % dev("sas"), {"status": 202, "payload": {"ok": True}})
    control("PUT", "/devices/%s/methods/echo" % dev("sas"), {"echo": True})
    control("PUT", "/devices/%s/methods/slow" % dev("sas"), {"delayMs": 7000})
    r = rm.invoke_device_method(dev("sas"), CloudToDeviceMethod(method_name="reboot", payload={"in": 1}))
    assert r.status == 202 and r.payload == {"ok": True}
    r = rm.invoke_device_method(dev("sas"), CloudToDeviceMethod(method_name="echo", payload={"in": [1, 2]}))
    assert r.status == 200 and r.payload == {"in": [1, 2]}
    r = rm.invoke_device_method(dev("sas"), CloudToDeviceMethod(method_name="echo"))
    assert r.payload == ""  # the SDK sends "" when there is no payload
    start = time.time()
    e = expect_error(
        lambda: rm.invoke_device_method(
            dev("sas"), CloudToDeviceMethod(method_name="slow", response_timeout_in_seconds=5)
        ),
        504,
        "GatewayTimeout",
    )
    assert json.loads(json.loads(e.response.text)["Message"])["errorCode"] == 504101
    assert 5 <= time.time() - start < 6.9


@check("invoke_device_module_method")
def _():
    expect_error(
        lambda: rm.invoke_device_module_method(dev("sas"), "m-sas", CloudToDeviceMethod(method_name="m")), 404,
        "DeviceNotOnline",
    )
    control("POST", "/devices/%s/modules/m-sas/connect" % dev("sas"))
    control("PUT", "/devices/%s/modules/m-sas/methods/m" % dev("sas"), {"payload": "module says hi"})
    r = rm.invoke_device_module_method(dev("sas"), "m-sas", CloudToDeviceMethod(method_name="m", payload=1))
    assert r.status == 200 and r.payload == "module says hi"


@check("bulk_create_or_update_devices: success, partial failure returned as a result, delete")
def _():
    def entry(name, mode):
        return ExportImportDevice(
            id=dev(name),
            import_mode=mode,
            status="enabled",
            authentication=AuthenticationMechanism(
                type="sas", symmetric_key=SymmetricKey(primary_key=KEY1, secondary_key=KEY2)
            ),
        )

    r = rm.bulk_create_or_update_devices([entry("b1", "create"), entry("b2", "create")])
    assert r.is_successful is True and r.errors == [] and r.warnings == []
    r = rm.bulk_create_or_update_devices([entry("b1", "create"), entry("b3", "create")])
    assert r.is_successful is False
    assert [(e.device_id, e.error_code) for e in r.errors] == [(dev("b1"), "DeviceAlreadyExists")]
    assert rm.get_device(dev("b3")).device_id == dev("b3")
    r = rm.bulk_create_or_update_devices([entry("b1", "delete"), entry("b2", "delete"), entry("b3", "delete")])
    assert r.is_successful is True
    expect_error(lambda: rm.get_device(dev("b2")), 404, "DeviceNotFound")


@check("send_c2d_message: the reference's property mapping, as the hub received it")
def _():
    expiry = int((time.time() + 600) * 1000)
    props = {
        "messageId": "py-msg-%s" % RUN,
        "correlationId": "py-corr",
        "contentType": "application/json",
        "contentEncoding": "utf-8",
        "expiryTimeUtc": expiry,
        "iothub-ack": "full",
        "region": "north",
    }
    rm.send_c2d_message(dev("sas"), '{"hello": "device"}', properties=props)
    rm.send_c2d_message(dev("sas"), b"second, no properties")
    got = [m for m in requests.get(CONTROL + "/c2d", verify=CA, timeout=30).json() if m["deviceId"] == dev("sas")]
    assert len(got) == 2, got
    m = got[0]
    assert m["messageId"] == props["messageId"]
    assert m["correlationId"] == "py-corr"
    assert m["contentType"] == "application/json" and m["contentEncoding"] == "utf-8"
    assert m["absoluteExpiryTime"] == expiry
    assert m["to"] == "/devices/%s/messages/devicebound" % dev("sas")
    assert m["applicationProperties"] == {"iothub-ack": "full", "region": "north"}, m["applicationProperties"]
    assert base64.b64decode(m["body"]) == b'{"hello": "device"}'
    # Without a messageId the SDK makes a UUID.
    assert uuid.UUID(got[1]["messageId"]) and base64.b64decode(got[1]["body"]) == b"second, no properties"
    assert rm.get_device(dev("sas")).cloud_to_device_message_count == 2


@check("send_c2d_message to an unknown device fails")
def _():
    try:
        rm.send_c2d_message(dev("nobody"), "x")
    except Exception as e:  # noqa: BLE001 - the SDK raises a bare Exception
        assert "C2D message send failure" in str(e), repr(e)
        return
    raise AssertionError("expected a send failure")


@check("delete_device: stale etag 412, then deleted")
def _():
    expect_error(lambda: rm.delete_device(dev("x509"), etag="c3RhbGU="), 412, "PreconditionFailed")
    rm.delete_device(dev("x509"))
    rm.delete_device(dev("child"), etag=rm.get_device(dev("child")).etag)
    expect_error(lambda: rm.get_device(dev("x509")), 404, "DeviceNotFound")
    expect_error(lambda: rm.delete_device(dev("x509")), 404)


@check("a wrong key: 401 IotHubUnauthorizedAccess")
def _():
    parts = dict(p.split("=", 1) for p in CS.split(";"))
    parts["SharedAccessKey"] = KEY2
    bad = IoTHubRegistryManager.from_connection_string(";".join("%s=%s" % kv for kv in parts.items()))
    expect_error(lambda: bad.get_devices(), 401, "IotHubUnauthorizedAccess")


# ---------------------------------------------------------------------------------------------
# IoTHubConfigurationManager: configurations (automatic device management, edge deployments)

cm = IoTHubConfigurationManager.from_connection_string(CS)


def cfg(name):
    return "py-%s-%s" % (RUN, name)


def adm(name, priority, value):
    return Configuration(
        id=cfg(name),
        schema_version="1.0",
        labels={"suite": "python"},
        content=ConfigurationContent(device_content={"properties.desired.fw": value}),
        target_condition="tags.suite = 'py-%s'" % RUN,
        priority=priority,
        metrics=ConfigurationMetrics(queries={"current": "SELECT deviceId FROM devices WHERE properties.reported.fw = '%s'" % value}),
    )


@check("IoTHubConfigurationManager.create_configuration and get_configuration")
def _():
    rm.create_device_with_sas(dev("cfg"), KEY1, KEY2, "enabled")
    rm.update_twin(dev("cfg"), Twin(tags={"suite": "py-%s" % RUN}), "*")
    created = cm.create_configuration(adm("adm", 5, "2.0"))
    assert created.id == cfg("adm") and created.etag == "MQ==", created
    assert created.priority == 5 and created.labels == {"suite": "python"}
    assert created.created_time_utc is not None and created.last_updated_time_utc is not None
    assert created.system_metrics.results == {"targetedCount": 1, "appliedCount": 1}, created.system_metrics.results
    got = cm.get_configuration(cfg("adm"))
    assert got.etag == created.etag and got.target_condition == created.target_condition
    assert got.content.device_content == {"properties.desired.fw": "2.0"}, got.content.device_content
    assert rm.get_twin(dev("cfg")).properties.desired["fw"] == "2.0"
    control("PATCH", "/devices/%s/reported" % dev("cfg"), {"fw": "2.0"})
    assert cm.get_configuration(cfg("adm")).metrics.results == {"current": 1}
    expect_error(lambda: cm.get_configuration(cfg("nope")), 404, "ConfigurationNotFound")


@check("create_configuration of an existing id: 409 ConfigurationAlreadyExists")
def _():
    expect_error(lambda: cm.create_configuration(adm("adm", 5, "2.0")), 409, "ConfigurationAlreadyExists")


@check("update_configuration: '*' updates; the etag as the SDK passes it (unquoted) is ignored: 409")
def _():
    current = cm.get_configuration(cfg("adm"))
    current.priority = 7
    updated = cm.update_configuration(current, "*")
    assert updated.priority == 7 and updated.etag != current.etag, updated
    # The SDK sends the etag raw; the service ignores unquoted etags, so this is a create
    # (Azure/azure-iot-hub-python#2). Quoted by the caller, it is compared.
    expect_error(lambda: cm.update_configuration(updated, updated.etag), 409, "ConfigurationAlreadyExists")
    expect_error(lambda: cm.update_configuration(updated, '"c3RhbGU="'), 412, "PreconditionFailed")
    again = cm.update_configuration(updated, '"%s"' % updated.etag)
    assert again.etag != updated.etag


@check("get_configurations with and without max_count; priority decides which applies")
def _():
    cm.create_configuration(adm("low", 1, "1.0"))
    ids = [c.id for c in cm.get_configurations()]
    assert cfg("adm") in ids and cfg("low") in ids, ids
    assert len(cm.get_configurations(max_count=1)) == 1
    low = cm.get_configuration(cfg("low"))
    assert low.system_metrics.results == {"targetedCount": 1, "appliedCount": 0}, low.system_metrics.results
    assert rm.get_twin(dev("cfg")).properties.desired["fw"] == "2.0"


@check("test_configuration_queries: valid queries, then the errors of invalid ones")
def _():
    ok = cm.test_configuration_queries(ConfigurationQueriesTestInput(
        target_condition="tags.suite = 'x'",
        custom_metric_queries={"m": "SELECT deviceId FROM devices"}))
    assert not ok.target_condition_error and not ok.custom_metric_query_errors, ok
    bad = cm.test_configuration_queries(ConfigurationQueriesTestInput(
        target_condition="tags.suite = ",
        custom_metric_queries={"m": "SELECT FROM devices", "fine": "SELECT * FROM devices"}))
    assert bad.target_condition_error, bad
    assert list(bad.custom_metric_query_errors) == ["m"], bad.custom_metric_query_errors


@check("apply_configuration_on_edge_device: $edgeAgent and $edgeHub desired properties")
def _():
    rm.create_device_with_sas(dev("edge"), KEY1, KEY2, "enabled", iot_edge=True)
    content = ConfigurationContent(modules_content={
        "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {"type": "docker"}}},
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {"up": "FROM /* INTO $upstream"}}},
    })
    cm.apply_configuration_on_edge_device(dev("edge"), content)
    agent = rm.get_module_twin(dev("edge"), "$edgeAgent").properties.desired
    assert agent["runtime"] == {"type": "docker"}, agent
    assert rm.get_module_twin(dev("edge"), "$edgeHub").properties.desired["routes"]["up"] == "FROM /* INTO $upstream"
    expect_error(lambda: cm.apply_configuration_on_edge_device(dev("cfg"), content), 400, "ArgumentInvalid")
    expect_error(lambda: cm.apply_configuration_on_edge_device(dev("nobody"), content), 404, "DeviceNotFound")


@check("delete_configuration: default '*', stale etag 412, then 404 ConfigurationNotFound")
def _():
    expect_error(lambda: cm.delete_configuration(cfg("low"), '"c3RhbGU="'), 412, "PreconditionFailed")
    cm.delete_configuration(cfg("low"))
    cm.delete_configuration(cfg("adm"), etag='"%s"' % cm.get_configuration(cfg("adm")).etag)
    expect_error(lambda: cm.get_configuration(cfg("low")), 404, "ConfigurationNotFound")
    expect_error(lambda: cm.delete_configuration(cfg("adm")), 404, "ConfigurationNotFound")


# ---------------------------------------------------------------------------------------------
# IoTHubHttpRuntimeManager: delivery feedback over HTTPS

hr = IoTHubHttpRuntimeManager.from_connection_string(CS)


def feedback_for(message_id):
    """A C2D message asking for full feedback, which the emulated device completes."""
    rm.send_c2d_message(dev("fb"), "feedback please", properties={"messageId": message_id, "iothub-ack": "full"})
    received = control("POST", "/devices/%s/messages/receive" % dev("fb")).json()
    assert received["message"]["messageId"] == message_id, received
    control("POST", "/messages/%s/complete" % received["lockToken"])


def receive_raw():
    """The SDK's own generated call with raw=True: its manager drops the response (2.7.0
    returns None), and with it the lock token, which the hub puts in the ETag header."""
    return hr.protocol.cloud_to_device_messages.receive_feedback_notification(raw=True).response


@check("IoTHubHttpRuntimeManager.receive_feedback_notification: 204 and 200 answer without error")
def _():
    rm.create_device_with_sas(dev("fb"), KEY1, KEY2, "enabled")
    # Settle what earlier checks left, so the queue is empty.
    while True:
        r = receive_raw()
        if r.status_code == 204:
            break
        hr.complete_feedback_notification(r.headers["ETag"].strip('"'))
    assert hr.receive_feedback_notification() is None
    feedback_for("py-fb-lost-%s" % RUN)
    # 200 with a batch, which 2.7.0 does not return: the call succeeds and gives None.
    assert hr.receive_feedback_notification() is None
    assert receive_raw().status_code == 204


@check("IoTHubHttpRuntimeManager.complete_feedback_notification with the ETag's lock token")
def _():
    feedback_for("py-fb-done-%s" % RUN)
    r = receive_raw()
    assert r.status_code == 200, r.status_code
    assert r.headers["Content-Type"] == "application/vnd.microsoft.iothub.feedback.json", r.headers
    records = r.json()
    assert [x["originalMessageId"] for x in records] == ["py-fb-done-%s" % RUN], records
    assert records[0]["statusCode"] == "Success" and records[0]["deviceId"] == dev("fb")
    etag = r.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"'), etag
    assert r.headers["iothub-deliverycount"] == "1"
    hr.complete_feedback_notification(etag.strip('"'))
    expect_error(lambda: hr.complete_feedback_notification(etag.strip('"')), 412, "DeviceMessageLockLost")
    assert receive_raw().status_code == 204


@check("IoTHubHttpRuntimeManager.abandon_feedback_notification offers the batch again")
def _():
    feedback_for("py-fb-again-%s" % RUN)
    first = receive_raw()
    assert first.status_code == 200
    hr.abandon_feedback_notification(first.headers["ETag"].strip('"'))
    second = receive_raw()
    assert second.status_code == 200
    assert [x["originalMessageId"] for x in second.json()] == ["py-fb-again-%s" % RUN]
    assert second.headers["iothub-deliverycount"] == "2"
    assert second.headers["ETag"] != first.headers["ETag"]
    expect_error(lambda: hr.abandon_feedback_notification(first.headers["ETag"].strip('"')), 412)
    hr.complete_feedback_notification(second.headers["ETag"].strip('"'))


# ---- IoTHubJobManager: scheduled jobs on the emulator's clock, and import/export with Azurite
# as the storage account (IOTHUB_INTEROP_BLOB_IN and _OUT: container SAS URLs; without them,
# IOTHUB_INTEROP_NO_BLOB=1, the import/export checks are left out).

jm = IoTHubJobManager.from_connection_string(CS)
BLOB = os.environ.get("IOTHUB_INTEROP_NO_BLOB") != "1"


def wait_job(get, job_id, done=("completed", "failed", "cancelled")):
    for _ in range(300):
        job = get(job_id)
        if job.status in done:
            return job
        time.sleep(0.1)
    raise AssertionError("job %s did not finish: %s" % (job_id, job.status))


def blob_url(container, name):
    base, _, sas = container.partition("?")
    return "%s/%s?%s" % (base, name, sas)


def soon(seconds=0):
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)


@check("IoTHubJobManager.create_scheduled_job (scheduleUpdateTwin) and get_scheduled_job until completed")
def _():
    rm.create_device_with_sas(dev("job-twin"), KEY1, KEY2, "enabled")
    job_id = "py-twin-" + RUN
    request = JobRequest(
        job_id=job_id,
        type="scheduleUpdateTwin",
        query_condition="deviceId = '%s'" % dev("job-twin"),
        update_twin=Twin(etag="*", tags={"job": RUN}, properties=TwinProperties(desired={"fromJob": 1})),
        start_time=soon(),
        max_execution_time_in_seconds=60,
    )
    created = jm.create_scheduled_job(job_id, request)
    assert created.status == "queued" and created.job_id == job_id, created.status
    job = wait_job(jm.get_scheduled_job, job_id)
    assert job.status == "completed", (job.status, job.failure_reason)
    stats = job.device_job_statistics
    assert (stats.device_count, stats.succeeded_count, stats.failed_count) == (1, 1, 0), stats
    twin = rm.get_twin(dev("job-twin"))
    assert twin.tags == {"job": RUN} and twin.properties.desired["fromJob"] == 1


@check("create_scheduled_job (scheduleDeviceMethod) on a device online through the control API")
def _():
    rm.create_device_with_sas(dev("job-method"), KEY1, KEY2, "enabled")
    control("POST", "/devices/%s/connect" % dev("job-method"))
    control("PUT", "/devices/%s/methods/reboot" % dev("job-method"), {"status": 200, "payload": {"ok": True}})
    job_id = "py-method-" + RUN
    request = JobRequest(
        job_id=job_id,
        type="scheduleDeviceMethod",
        query_condition="deviceId = '%s'" % dev("job-method"),
        cloud_to_device_method=CloudToDeviceMethod(method_name="reboot", payload={}, response_timeout_in_seconds=30),
        start_time=soon(),
        max_execution_time_in_seconds=60,
    )
    assert jm.create_scheduled_job(job_id, request).status == "queued"
    job = wait_job(jm.get_scheduled_job, job_id)
    assert job.status == "completed" and job.device_job_statistics.succeeded_count == 1, job.status
    # query_iot_hub reads every row as a Twin; devices.jobs rows are device jobs.
    rows = rm.query_iot_hub(QuerySpecification(query="SELECT * FROM devices.jobs WHERE jobId = '%s'" % job_id))
    assert rows.type == "deviceJob" and len(rows.items) == 1, rows.type


@check("cancel_scheduled_job of a queued job; a method timeout of 4 s: 400")
def _():
    job_id = "py-cancel-" + RUN
    request = JobRequest(
        job_id=job_id,
        type="scheduleUpdateTwin",
        query_condition="deviceId = 'nobody'",
        update_twin=Twin(etag="*", tags={"never": True}),
        start_time=soon(3600),
        max_execution_time_in_seconds=60,
    )
    jm.create_scheduled_job(job_id, request)
    assert jm.cancel_scheduled_job(job_id).status == "cancelled"
    assert jm.get_scheduled_job(job_id).status == "cancelled"
    bad = JobRequest(
        job_id="py-bad-" + RUN,
        type="scheduleDeviceMethod",
        query_condition="deviceId = 'nobody'",
        cloud_to_device_method=CloudToDeviceMethod(method_name="m", response_timeout_in_seconds=4),
        start_time=soon(),
        max_execution_time_in_seconds=60,
    )
    expect_error(lambda: jm.create_scheduled_job("py-bad-" + RUN, bad), 400, "ArgumentInvalid")
    expect_error(lambda: jm.get_scheduled_job("py-none-" + RUN), 404, "JobNotFound")


@check("query_scheduled_jobs by type and status")
def _():
    twin_jobs = jm.query_scheduled_jobs("scheduleUpdateTwin", None)
    ids = [j["jobId"] for j in twin_jobs.items]
    assert "py-twin-" + RUN in ids and "py-method-" + RUN not in ids, ids
    cancelled = jm.query_scheduled_jobs(None, "cancelled")
    assert [j["jobId"] for j in cancelled.items if j["jobId"].endswith(RUN)] == ["py-cancel-" + RUN], cancelled.items
    assert twin_jobs.type == "jobResponse"


if BLOB:
    BLOB_IN = os.environ["IOTHUB_INTEROP_BLOB_IN"]
    BLOB_OUT = os.environ["IOTHUB_INTEROP_BLOB_OUT"]

    @check("create_import_export_job (export) and get_import_export_job until completed: devices.txt")
    def _():
        rm.create_device_with_sas(dev("exported"), KEY1, KEY2, "enabled")
        job = jm.create_import_export_job(JobProperties(
            type="export", output_blob_container_uri=BLOB_OUT, exclude_keys_in_export=False))
        assert job.status == "enqueued" and job.type == "export", job.status
        job = wait_job(jm.get_import_export_job, job.job_id)
        assert job.status == "completed", (job.status, job.failure_reason)
        text = requests.get(blob_url(BLOB_OUT, "devices.txt"), timeout=30).text
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        mine = [d for d in lines if d["id"] == dev("exported")]
        assert mine and mine[0]["authentication"]["symmetricKey"]["primaryKey"] == KEY1, mine

    @check("create_import_export_job (import): devices.txt applied, importErrors.log for the failed line")
    def _():
        body = "\n".join([
            json.dumps({"id": dev("imported"), "importMode": "create", "tags": {"from": "import"}}),
            json.dumps({"id": dev("ghost"), "importMode": "update"}),
        ])
        r = requests.put(blob_url(BLOB_IN, "devices.txt"), data=body.encode(),
                         headers={"x-ms-blob-type": "BlockBlob", "x-ms-version": "2019-12-12"}, timeout=30)
        assert r.status_code == 201, (r.status_code, r.text)
        job = jm.create_import_export_job(JobProperties(
            type="import", input_blob_container_uri=BLOB_IN, output_blob_container_uri=BLOB_OUT))
        job = wait_job(jm.get_import_export_job, job.job_id)
        assert job.status == "completed", (job.status, job.failure_reason)
        assert rm.get_twin(dev("imported")).tags == {"from": "import"}
        log = requests.get(blob_url(BLOB_OUT, "importErrors.log"), timeout=30).text
        errors = [json.loads(line) for line in log.splitlines() if line.strip()]
        assert [(e["deviceId"], e["errorCode"]) for e in errors] == [(dev("ghost"), "DeviceNotFound")], errors

    @check("get_import_export_jobs lists the jobs")
    def _():
        jobs = jm.get_import_export_jobs()
        assert len(jobs) >= 2 and all(j.status == "completed" for j in jobs), [j.status for j in jobs]

    @check("cancel_import_export_job, and of a missing job: 404 JobNotFound")
    def _():
        job = jm.create_import_export_job(JobProperties(type="export", output_blob_container_uri=BLOB_OUT))
        jm.cancel_import_export_job(job.job_id)
        assert wait_job(jm.get_import_export_job, job.job_id).status in ("cancelled", "completed")
        expect_error(lambda: jm.cancel_import_export_job(str(uuid.uuid4())), 404, "JobNotFound")

    @check("identity-based storage is not emulated: 400")
    def _():
        e = expect_error(lambda: jm.create_import_export_job(JobProperties(
            type="export", output_blob_container_uri=BLOB_OUT.partition("?")[0],
            storage_authentication_type="identityBased")), 400, "ArgumentInvalid")
        assert "not emulated" in e.response.text
        assert "sig=" not in e.response.text


if AAD:
    TENANT = os.environ["AZURE_TENANT_ID"]
    AUTHORITY = os.environ["IOTHUB_AAD_AUTHORITY"]
    CONTRIBUTOR = (os.environ["IOTHUB_AAD_CONTRIBUTOR_ID"], os.environ["IOTHUB_AAD_CONTRIBUTOR_SECRET"])
    READER = (os.environ["IOTHUB_AAD_READER_ID"], os.environ["IOTHUB_AAD_READER_SECRET"])
    aad = {}

    def aad_credential(client_id, secret):
        # Offline, MSAL must not ask login.microsoftonline.com about the authority.
        return ClientSecretCredential(
            TENANT, client_id, secret, authority=AUTHORITY, disable_instance_discovery=True, connection_verify=CA
        )

    def last_request(path):
        log = requests.get(CONTROL + "/requests", verify=CA, timeout=30).json()
        return [e for e in log if e["path"] == path][-1]

    @check("Azure AD: from_token_credential with ClientSecretCredential, create_device_with_sas")
    def _():
        aad["rm"] = IoTHubRegistryManager.from_token_credential(HOST, aad_credential(*CONTRIBUTOR))
        d = aad["rm"].create_device_with_sas(dev("aad"), KEY1, KEY2, "enabled")
        assert d.device_id == dev("aad") and d.authentication.symmetric_key.primary_key == KEY1
        headers = dict(last_request("/devices/%s" % dev("aad"))["headers"])
        assert headers["authorization"] == "Bearer REDACTED", headers
        token_request = last_request("/%s/oauth2/v2.0/token" % TENANT)
        assert token_request["status"] == 200
        assert "client_secret=REDACTED" in token_request["body"], token_request["body"]
        assert CONTRIBUTOR[1] not in json.dumps(token_request)

    @check("Azure AD: get_twin and update_twin with the token credential")
    def _():
        t = aad["rm"].get_twin(dev("aad"))
        t2 = aad["rm"].update_twin(dev("aad"), Twin(tags={"auth": "aad"}, properties=TwinProperties(desired={"k": 1})), t.etag)
        assert t2.tags == {"auth": "aad"} and t2.properties.desired["k"] == 1

    @check("Azure AD: send_c2d_message over AMQP with the token on $cbs")
    def _():
        aad["rm"].send_c2d_message(dev("aad"), "signed in with Entra ID")
        got = [m for m in requests.get(CONTROL + "/c2d", verify=CA, timeout=30).json() if m["deviceId"] == dev("aad")]
        assert len(got) == 1, got
        assert base64.b64decode(got[0]["body"]) == b"signed in with Entra ID"

    @check("Azure AD: an IoT Hub Data Reader reads, and its writes answer 401 IotHubUnauthorizedAccess")
    def _():
        reader = IoTHubRegistryManager.from_token_credential(HOST, aad_credential(*READER))
        assert reader.get_device(dev("aad")).device_id == dev("aad")
        assert reader.get_twin(dev("aad")).tags == {"auth": "aad"}
        expect_error(lambda: reader.create_device_with_sas(dev("aad-r"), KEY1, KEY2, "enabled"), 401,
                     "IotHubUnauthorizedAccess")
        expect_error(lambda: reader.update_twin(dev("aad"), Twin(tags={"by": "reader"})), 401, "IotHubUnauthorizedAccess")
        expect_error(lambda: reader.delete_device(dev("aad")), 401, "IotHubUnauthorizedAccess")
        expect_error(lambda: rm.get_device(dev("aad-r")), 404, "DeviceNotFound")

    @check("Azure AD: a wrong client secret is refused by the token endpoint (AADSTS7000215)")
    def _():
        try:
            aad_credential(CONTRIBUTOR[0], "not-the-secret").get_token("https://iothubs.azure.net/.default")
        except ClientAuthenticationError as e:
            assert "AADSTS7000215" in str(e), str(e)
            assert "not-the-secret" not in str(e)
            return
        raise AssertionError("expected ClientAuthenticationError")

passed = sum(1 for _, e in results if e is None)
failed = len(results) - passed
print("python: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
