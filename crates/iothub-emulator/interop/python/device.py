"""The official Python device SDK, azure-iot-device 2.14.0, unmodified, against the
iothub-emulator's device endpoint: MQTT on 8883 and MQTT over WebSockets on 443
(`/$iothub/websocket`), the emulator's CA given as `server_verification_cert`.

The service side is not in this script: it is driven by `iothub-registry` in the Rust test
that runs it (tests/it/device_interop.rs). When a check needs the service, the script prints
one line `SERVICE {json}` on stdout and reads one line of JSON back on stdin:
`{"ok": true, "value": ...}` or `{"ok": false, "error": "..."}`. Operations:

- telemetry: the service finds a message carrying `marker` in the emulator.
- c2d: `send_c2d_message` to the device, with `messageId` and positive acknowledgement.
- feedback: the feedback receiver gets the record of `message_id`, status Success.
- reported: `get_twin` (`get_module_twin`) shows reported `key` = `value`.
- desired: `update_twin` (`update_module_twin`) sets desired `key` = `value`.
- method: `invoke_device_method` (`invoke_device_module_method`) with `payload`; the value
  is the service's result, `{"status": ..., "payload": ...}`.

Environment: IOTHUB_DEVICE_INTEROP, JSON written by the test: `ca` (the CA's PEM file), and
per transport (`mqtt`, `ws`) the SAS device's and the module's connection strings and ids,
and the X.509 device's id, host, certificate and key files.

Prints one line per check and then "python-device: N passed, M failed"; exits non-zero on
any failure.
"""

import json
import os
import queue
import sys
import time
import traceback
import uuid

from azure.iot.device import (
    IoTHubDeviceClient,
    IoTHubModuleClient,
    Message,
    MethodResponse,
    X509,
)

CONFIG = json.loads(os.environ["IOTHUB_DEVICE_INTEROP"])
with open(CONFIG["ca"]) as f:
    CA = f.read()
# Long enough for a retried connect, short enough that a missing feature fails the check
# instead of hanging the suite.
WAIT = 20
results = []


def service(op, **args):
    """Asks the Rust side to do a service operation; returns its value or raises."""
    args["op"] = op
    print("SERVICE " + json.dumps(args), flush=True)
    line = sys.stdin.readline()
    if not line:
        raise RuntimeError("the service side closed stdin")
    answer = json.loads(line)
    if not answer.get("ok"):
        raise AssertionError("service %s: %s" % (op, answer.get("error")))
    return answer.get("value")


def check(name, fn):
    try:
        fn()
        results.append((name, None))
        print("PASS %s" % name, flush=True)
    except Exception as e:  # a failed check is reported, and the suite goes on
        results.append((name, e))
        print("FAIL %s: %r" % (name, e), flush=True)
        traceback.print_exc(file=sys.stderr)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


class Device:
    """A connected client and queues its handlers fill."""

    def __init__(self, client, device_id, module_id=None):
        self.client = client
        self.device_id = device_id
        self.module_id = module_id
        self.c2d = queue.Queue()
        self.desired = queue.Queue()
        self.methods = queue.Queue()

    def target(self):
        t = {"device": self.device_id}
        if self.module_id:
            t["module"] = self.module_id
        return t

    def install_handlers(self, c2d=True):
        # Handlers subscribe on first use; the module client never subscribes to C2D.
        if c2d:
            self.client.on_message_received = self.c2d.put
        self.client.on_twin_desired_properties_patch_received = self.desired.put

        def on_method(request):
            self.methods.put(request.payload)
            # The answer carries the request's payload back, so the service can see that the
            # payload crossed both ways.
            response = MethodResponse.create_from_method_request(
                request, 200, {"echo": request.payload, "method": request.name}
            )
            self.client.send_method_response(response)

        self.client.on_method_request_received = on_method


def telemetry(dev):
    marker = "py-%s" % uuid.uuid4().hex[:12]
    msg = Message(json.dumps({"marker": marker}))
    msg.custom_properties["marker"] = marker
    msg.message_id = marker
    msg.content_type = "application/json"
    msg.content_encoding = "utf-8"
    dev.client.send_message(msg)
    service("telemetry", marker=marker, **dev.target())


def c2d_and_feedback(dev, prefix):
    mid = "%s-c2d-%s" % (prefix, uuid.uuid4().hex[:8])
    received = {}

    def receive():
        service("c2d", message_id=mid, body="hello " + mid, **dev.target())
        msg = dev.c2d.get(timeout=WAIT)
        expect(msg.message_id == mid, "message id %r, expected %r" % (msg.message_id, mid))
        expect(msg.data == ("hello " + mid).encode(), "body %r" % msg.data)
        received["ok"] = True

    def feedback():
        expect(received.get("ok"), "no message was received")
        # The SDK's PUBACK completed the message; the hub's feedback says so.
        service("feedback", message_id=mid, **dev.target())

    return receive, feedback


def get_twin(dev):
    twin = dev.client.get_twin()
    expect("desired" in twin and "reported" in twin, "twin %r" % twin)
    expect("$version" in twin["desired"], "desired without $version: %r" % twin)
    expect("$version" in twin["reported"], "reported without $version: %r" % twin)


def report(dev):
    value = uuid.uuid4().hex[:8]
    dev.client.patch_twin_reported_properties({"pyReported": value, "nested": {"n": 1}})
    service("reported", key="pyReported", value=value, **dev.target())


def desired(dev):
    value = uuid.uuid4().hex[:8]
    # Drain anything earlier (none expected) so the patch seen is the one made here.
    while not dev.desired.empty():
        dev.desired.get_nowait()
    service("desired", key="pyDesired", value=value, **dev.target())
    deadline = time.time() + WAIT
    while True:
        patch = dev.desired.get(timeout=max(0.1, deadline - time.time()))
        if patch.get("pyDesired") == value:
            expect("$version" in patch, "patch without $version: %r" % patch)
            return


def method(dev):
    payload = {"n": 7, "text": uuid.uuid4().hex[:6]}
    result = service("method", name="reboot", payload=payload, **dev.target())
    expect(result["status"] == 200, "status %r" % result)
    expect(result["payload"] == {"echo": payload, "method": "reboot"}, "payload %r" % result)
    seen = dev.methods.get(timeout=WAIT)
    expect(seen == payload, "the device saw %r" % seen)


def suite(transport):
    cfg = CONFIG[transport]
    ws = transport == "ws"
    name = "python %s" % transport
    box = {}

    def connect_sas():
        client = IoTHubDeviceClient.create_from_connection_string(
            cfg["device_cs"], server_verification_cert=CA, websockets=ws
        )
        client.connect()
        dev = Device(client, cfg["device_id"])
        dev.install_handlers()
        box["dev"] = dev

    def with_dev(f):
        def run():
            expect("dev" in box, "not connected")
            f(box["dev"])

        return run

    check("%s: connect with SAS" % name, connect_sas)
    check("%s: telemetry reaches the hub" % name, with_dev(telemetry))
    receive, feedback = None, None

    def c2d_receive():
        nonlocal receive, feedback
        expect("dev" in box, "not connected")
        receive, feedback = c2d_and_feedback(box["dev"], transport)
        receive()

    check("%s: receive a C2D message from send_c2d_message" % name, c2d_receive)
    check(
        "%s: positive feedback of the C2D message" % name,
        lambda: (feedback or (lambda: expect(False, "no message")))(),
    )
    check("%s: get the twin" % name, with_dev(get_twin))
    check("%s: reported properties read by get_twin" % name, with_dev(report))
    check("%s: desired patch made by update_twin" % name, with_dev(desired))
    check("%s: direct method from invoke_device_method" % name, with_dev(method))
    if "dev" in box:
        box["dev"].client.shutdown()

    x509 = {}

    def connect_x509():
        client = IoTHubDeviceClient.create_from_x509_certificate(
            x509=X509(cfg["x509_cert"], cfg["x509_key"]),
            hostname=cfg["host"],
            device_id=cfg["x509_device_id"],
            server_verification_cert=CA,
            websockets=ws,
        )
        client.connect()
        x509["dev"] = Device(client, cfg["x509_device_id"])

    check("%s: connect with X.509 (self-signed)" % name, connect_x509)

    def x509_telemetry():
        expect("dev" in x509, "not connected")
        telemetry(x509["dev"])

    check("%s: X.509 device telemetry" % name, x509_telemetry)
    if "dev" in x509:
        x509["dev"].client.shutdown()

    mod = {}

    def connect_module():
        client = IoTHubModuleClient.create_from_connection_string(
            cfg["module_cs"], server_verification_cert=CA, websockets=ws
        )
        client.connect()
        m = Device(client, cfg["device_id"], cfg["module_id"])
        m.install_handlers(c2d=False)
        mod["dev"] = m

    def with_mod(f):
        def run():
            expect("dev" in mod, "not connected")
            f(mod["dev"])

        return run

    check("%s: module connects with SAS" % name, connect_module)
    check("%s: module telemetry" % name, with_mod(telemetry))
    check("%s: module gets its twin" % name, with_mod(get_twin))
    check("%s: module reported read by get_module_twin" % name, with_mod(report))
    check("%s: module desired patch from update_module_twin" % name, with_mod(desired))
    check("%s: module direct method" % name, with_mod(method))
    if "dev" in mod:
        mod["dev"].client.shutdown()


for transport in ("mqtt", "ws"):
    suite(transport)

passed = sum(1 for _, e in results if e is None)
failed = len(results) - passed
print("python-device: %d passed, %d failed" % (passed, failed), flush=True)
sys.exit(1 if failed else 0)
