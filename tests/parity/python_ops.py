"""The parity script: a fixed list of IoTHubRegistryManager calls with fixed inputs.

tests/it/parity.rs runs the same list through iothub-registry against another fresh
emulator and compares what each emulator received. Keep the two lists in the same order.
Environment: IOTHUB_CONNECTION_STRING, REQUESTS_CA_BUNDLE. Prints "parity: N calls" (REST
calls; the C2D sends are compared by what the emulator queued, not by its request log).
"""

import os

import certifi
import requests
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import (
    AuthenticationMechanism,
    CloudToDeviceMethod,
    ExportImportDevice,
    QuerySpecification,
    SymmetricKey,
    Twin,
    TwinProperties,
)
from msrest.exceptions import HttpOperationError

CS = os.environ["IOTHUB_CONNECTION_STRING"]
CA = os.environ["REQUESTS_CA_BUNDLE"]
HOST = dict(p.split("=", 1) for p in CS.split(";"))["HostName"]
K1 = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
K2 = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
T1 = "A" * 40
T2 = "B" * 40

# uamqp 1.6.11, which azure-iot-hub 2.7.0 sends C2D with, trusts only the bundle at
# certifi.where(), and the SDK offers no CA option for AMQP: point it at the emulator's CA.
certifi.where = lambda: CA

rm = IoTHubRegistryManager.from_connection_string(CS)
calls = 0


def call(fn, *args, **kwargs):
    """Runs one call; the failing ones are part of the list too."""
    global calls
    calls += 1
    try:
        return fn(*args, **kwargs)
    except HttpOperationError:
        return None


def control(method, path, body=None):
    requests.request(method, "https://%s/_emulator%s" % (HOST, path), json=body, verify=CA).raise_for_status()


d = call(rm.create_device_with_sas, "p-sas", K1, K2, "enabled")
call(rm.create_device_with_sas, "p-sas", K1, K2, "enabled")  # 409
call(rm.create_device_with_x509, "p-x509", T1, T2, "enabled")
call(rm.create_device_with_certificate_authority, "p-ca", "disabled", iot_edge=True, status_reason="r")
call(rm.update_device_with_sas, "p-sas", None, K2, K1, "disabled", status_reason="maintenance")
d = call(rm.get_device, "p-sas")
call(rm.update_device_with_sas, "p-sas", d.etag, K1, K2, "enabled")
call(rm.update_device_with_sas, "p-sas", "c3RhbGU=", K1, K2, "enabled")  # 412
call(rm.update_device_with_x509, "p-x509", None, T2, T1, "enabled")
call(rm.update_device_with_certificate_authority, "p-ca", None, "enabled")
call(rm.get_device, "p-missing")  # 404
call(rm.get_devices, 5)
call(rm.get_devices)
call(rm.create_module_with_sas, "p-sas", "m-sas", "owner", K1, K2)
call(rm.create_module_with_x509, "p-sas", "m-x509", None, T1, T2)
call(rm.create_module_with_certificate_authority, "p-sas", "m-ca", None)
m = call(rm.get_module, "p-sas", "m-sas")
call(rm.update_module_with_sas, "p-sas", "m-sas", "other", m.etag, K2, K1)
call(rm.update_module_with_x509, "p-sas", "m-x509", None, None, T2, T1)
call(rm.get_modules, "p-sas")
call(rm.get_twin, "p-sas")
call(rm.update_twin, "p-sas", Twin(tags={"a": 1}, properties=TwinProperties(desired={"d": 1})), "AAAAAAAAAAE=")
call(rm.update_twin, "p-sas", Twin(tags={"a": 2}), "AAAAAAAAAAE=")  # 412
call(rm.replace_twin, "p-sas", Twin(tags={"b": 1}, properties=TwinProperties(desired={"e": 2})))
call(rm.get_module_twin, "p-sas", "m-sas")
call(rm.update_module_twin, "p-sas", "m-sas", Twin(properties=TwinProperties(desired={"x": 1})), "AAAAAAAAAAE=")
call(rm.replace_module_twin, "p-sas", "m-sas", Twin(tags={"y": 2}))
page = call(rm.query_iot_hub, QuerySpecification(query="SELECT * FROM devices"), None, 2)
call(rm.query_iot_hub, QuerySpecification(query="SELECT * FROM devices"), page.continuation_token, 2)
call(rm.query_iot_hub, QuerySpecification(query="SELECT COUNT() AS n FROM devices"))
call(rm.get_device_registry_statistics)
call(rm.get_service_statistics)
call(rm.invoke_device_method, "p-sas", CloudToDeviceMethod(method_name="m"))  # 404103
control("POST", "/devices/p-sas/connect")
control("PUT", "/devices/p-sas/methods/m", {"echo": True})
call(rm.invoke_device_method, "p-sas", CloudToDeviceMethod(method_name="m", payload={"k": [1, 2]},
                                                           response_timeout_in_seconds=30,
                                                           connect_timeout_in_seconds=5))
control("POST", "/devices/p-sas/modules/m-sas/connect")
control("PUT", "/devices/p-sas/modules/m-sas/methods/m", {"echo": True})
call(rm.invoke_device_module_method, "p-sas", "m-sas", CloudToDeviceMethod(method_name="m", payload="hi"))


def entry(name, mode):
    return ExportImportDevice(
        id=name,
        import_mode=mode,
        status="enabled",
        authentication=AuthenticationMechanism(type="sas", symmetric_key=SymmetricKey(primary_key=K1, secondary_key=K2)),
    )


call(rm.bulk_create_or_update_devices, [entry("p-b1", "create"), entry("p-b2", "create")])
call(rm.bulk_create_or_update_devices, [entry("p-b1", "create")])  # 400, returned
call(rm.bulk_create_or_update_devices, [entry("p-b1", "delete"), entry("p-b2", "delete")])
call(rm.delete_module, "p-sas", "m-x509")
m = call(rm.get_module, "p-sas", "m-ca")
call(rm.delete_module, "p-sas", "m-ca", m.etag)
call(rm.delete_device, "p-x509", "c3RhbGU=")  # 412
call(rm.delete_device, "p-x509")
call(rm.delete_device, "p-missing")  # 404
# C2D over AMQP (port 5671 of the host, which the SDK always dials): every mapped property,
# then a message with none.
rm.send_c2d_message("p-sas", "hello", {
    "messageId": "p-c2d-1",
    "correlationId": "c-1",
    "contentType": "application/json",
    "contentEncoding": "utf-8",
    "expiryTimeUtc": 4102444800000,
    "iothub-ack": "full",
    "color": "blue",
})
rm.send_c2d_message("p-sas", "plain")
print("parity: %d calls" % calls)
