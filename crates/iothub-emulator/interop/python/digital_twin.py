"""The official Python SDKs' digital twins against the emulator: azure-iot-hub 2.7.0's
DigitalTwinClient (get_digital_twin, update_digital_twin, invoke_command,
invoke_component_command), with a Plug and Play device in the same process built on
azure-iot-device 2.14.0 (IoTHubDeviceClient with the model id as its product_info, which the SDK sends as the
`model-id` of its MQTT username when it is a DTMI; over MQTT to the emulator's 8883):
it answers commands and acknowledges writable properties as the PnP conventions say.

Environment: IOTHUB_CONNECTION_STRING (a service policy), REQUESTS_CA_BUNDLE (the emulator's
CA, also given to the device as server_verification_cert).

Prints PASS/FAIL per named check and `python-dt: N passed, M failed` last.
"""

import os
import queue
import time
import traceback
import uuid

from azure.iot.device import IoTHubDeviceClient, MethodResponse
from azure.iot.hub import DigitalTwinClient, IoTHubRegistryManager

CS = os.environ["IOTHUB_CONNECTION_STRING"]
HOST = dict(p.split("=", 1) for p in CS.split(";"))["HostName"]
with open(os.environ["REQUESTS_CA_BUNDLE"]) as f:
    CA = f.read()
MODEL = "dtmi:com:example:TemperatureController;2"
DEVICE = "py-dt-%s" % uuid.uuid4().hex[:8]

passed = failed = 0


def check(name, fn):
    global passed, failed
    try:
        fn()
        passed += 1
        print("PASS %s" % name, flush=True)
    except Exception as e:  # noqa: BLE001: a check fails on anything
        failed += 1
        print("FAIL %s: %r" % (name, e), flush=True)
        traceback.print_exc()


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def eventually(what, fn, wait=10.0):
    deadline = time.time() + wait
    while True:
        value = fn()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("never: %s" % what)
        time.sleep(0.2)


rm = IoTHubRegistryManager.from_connection_string(CS)
dt = DigitalTwinClient.from_connection_string(CS)
box = {}
patches = queue.Queue()


def on_method(client, request):
    # PnP: a component command arrives as `component*command`.
    if request.name == "reboot":
        status, payload = 200, {"rebooting": True, "delay": request.payload}
    elif request.name == "thermostat1*getMaxMinReport":
        status, payload = 201, {"maxTemp": 30.5, "since": request.payload}
    else:
        status, payload = 404, {"unknown": request.name}
    client.send_method_response(MethodResponse.create_from_method_request(request, status, payload))


def on_patch(client, patch):
    # Acknowledge each writable property, at the root and in components (PnP conventions).
    version = patch.get("$version")
    ack = {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if isinstance(value, dict) and value.get("__t") == "c":
            ack[key] = {"__t": "c"}
            for k, v in value.items():
                if k != "__t":
                    ack[key][k] = {"value": v, "ac": 200, "av": version, "ad": "done"}
        else:
            ack[key] = {"value": value, "ac": 200, "av": version, "ad": "done"}
    client.patch_twin_reported_properties(ack)
    patches.put(patch)


def connect_device():
    rm.create_device_with_sas(DEVICE, None, None, "enabled")
    device = rm.get_device(DEVICE)
    key = device.authentication.symmetric_key.primary_key
    device_cs = "HostName=%s;DeviceId=%s;SharedAccessKey=%s" % (HOST, DEVICE, key)
    client = IoTHubDeviceClient.create_from_connection_string(
        device_cs, server_verification_cert=CA, product_info=MODEL
    )
    client.connect()
    client.on_method_request_received = lambda r: on_method(client, r)
    client.on_twin_desired_properties_patch_received = lambda p: on_patch(client, p)
    client.patch_twin_reported_properties(
        {"serialNumber": "SN-42", "thermostat1": {"__t": "c", "temperature": 21.5}}
    )
    box["client"] = client
    # The 2021-04-12 Twin model has no modelId: msrest keeps it in additional_properties.
    twin = rm.get_twin(DEVICE)
    expect(twin.additional_properties.get("modelId") == MODEL, twin.additional_properties)


def get_digital_twin():
    twin = eventually("reported serialNumber", lambda: (lambda t: t if "serialNumber" in t else None)(dt.get_digital_twin(DEVICE)))
    expect(twin["$dtId"] == DEVICE, twin)
    expect(twin["$metadata"]["$model"] == MODEL, twin)
    expect(twin["serialNumber"] == "SN-42", twin)
    expect(twin["thermostat1"]["temperature"] == 21.5, twin)
    expect("lastUpdateTime" in twin["$metadata"]["serialNumber"], twin)


def update_root_and_ack():
    dt.update_digital_twin(DEVICE, [{"op": "add", "path": "/targetTemperature", "value": 22}])
    patch = patches.get(timeout=10)
    expect(patch["targetTemperature"] == 22, patch)

    def acked():
        twin = dt.get_digital_twin(DEVICE)
        meta = twin["$metadata"].get("targetTemperature", {})
        return twin if meta.get("ackCode") == 200 else None

    twin = eventually("acknowledged", acked)
    meta = twin["$metadata"]["targetTemperature"]
    expect(twin["targetTemperature"] == 22, twin)
    expect(meta["desiredValue"] == 22, meta)
    expect(meta["ackVersion"] == meta["desiredVersion"], meta)
    expect(meta["ackDescription"] == "done", meta)


def update_component_and_ack():
    dt.update_digital_twin(
        DEVICE, [{"op": "add", "path": "/thermostat1/targetTemperature", "value": 40}]
    )
    patch = patches.get(timeout=10)
    expect(patch["thermostat1"] == {"__t": "c", "targetTemperature": 40}, patch)

    def acked():
        twin = dt.get_digital_twin(DEVICE)
        meta = twin["thermostat1"]["$metadata"].get("targetTemperature", {})
        return twin if meta.get("ackCode") == 200 else None

    twin = eventually("component acknowledged", acked)
    expect(twin["thermostat1"]["targetTemperature"] == 40, twin)


def replace_and_remove():
    dt.update_digital_twin(
        DEVICE,
        [
            {"op": "replace", "path": "/targetTemperature", "value": 23},
            {"op": "remove", "path": "/thermostat1/targetTemperature"},
        ],
    )
    patch = patches.get(timeout=10)
    expect(patch["targetTemperature"] == 23, patch)
    desired = rm.get_twin(DEVICE).properties.desired
    expect(desired["targetTemperature"] == 23, desired)
    expect("targetTemperature" not in desired["thermostat1"], desired)


def etag_conditions():
    # The SDK returns no headers from get_digital_twin; raw=True gives them.
    raw = dt.protocol.digital_twin.get_digital_twin(DEVICE, raw=True)
    etag = raw.response.headers["ETag"]
    expect(etag.startswith('"'), etag)
    dt.update_digital_twin(DEVICE, [{"op": "add", "path": "/mode", "value": "eco"}], etag=etag)
    patches.get(timeout=10)
    try:
        dt.update_digital_twin(DEVICE, [{"op": "add", "path": "/mode", "value": "x"}], etag=etag)
    except Exception as e:  # noqa: BLE001
        expect(getattr(getattr(e, "response", None), "status_code", None) == 412, repr(e))
    else:
        raise AssertionError("a stale etag was accepted")


def invalid_patch():
    try:
        dt.update_digital_twin(DEVICE, [{"op": "replace", "path": "/nothing", "value": 1}])
    except Exception as e:  # noqa: BLE001
        expect(getattr(getattr(e, "response", None), "status_code", None) == 400, repr(e))
    else:
        raise AssertionError("an invalid patch was accepted")


def invoke_command():
    result = dt.invoke_command(DEVICE, "reboot", 5, connect_timeout_in_seconds=5, response_timeout_in_seconds=10)
    expect(result == {"rebooting": True, "delay": 5}, result)


def invoke_component_command():
    raw = dt.protocol.digital_twin.invoke_component_command(
        DEVICE, "thermostat1", "getMaxMinReport", "2026-01-01", raw=True
    )
    expect(raw.response.headers["x-ms-command-statuscode"] == "201", raw.response.headers)
    result = dt.invoke_component_command(DEVICE, "thermostat1", "getMaxMinReport", "2026-01-01")
    expect(result == {"maxTemp": 30.5, "since": "2026-01-01"}, result)


def command_to_offline_device():
    box["client"].shutdown()
    eventually("disconnected", lambda: rm.get_device(DEVICE).connection_state == "Disconnected")
    try:
        dt.invoke_command(DEVICE, "reboot", {}, connect_timeout_in_seconds=0)
    except Exception as e:  # noqa: BLE001
        expect(getattr(getattr(e, "response", None), "status_code", None) == 404, repr(e))
    else:
        raise AssertionError("an offline device answered")


check("device connects with its model id; the twin shows modelId", connect_device)
check("get_digital_twin: $dtId, $model, reported root and component", get_digital_twin)
check("update_digital_twin add at the root, the device acknowledges", update_root_and_ack)
check("update_digital_twin add in a component, the device acknowledges", update_component_and_ack)
check("update_digital_twin replace and remove", replace_and_remove)
check("update_digital_twin with etag: current accepted, stale 412", etag_conditions)
check("update_digital_twin invalid patch: 400", invalid_patch)
check("invoke_command at the root", invoke_command)
check("invoke_component_command, with x-ms-command-statuscode", invoke_component_command)
check("invoke_command on an offline device: 404", command_to_offline_device)
try:
    rm.delete_device(DEVICE)
except Exception:  # noqa: BLE001: cleanup only
    pass
print("python-dt: %d passed, %d failed" % (passed, failed), flush=True)
