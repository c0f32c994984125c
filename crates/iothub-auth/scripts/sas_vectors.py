#!/usr/bin/env python3
"""Regenerate ../testdata/sas_vectors.json with the official Python service SDK.

Every token in the file is produced by the package's own code, never by code in this script:

- HTTP: ``azure.iot.hub.sastoken.SasToken`` (what the registry manager puts in ``Authorization``).
- AMQP: ``azure.iot.hub.iothub_amqp_client.IoTHubAmqpClientSharedAccessKeyAuth``, whose token
  builder is a closure handed to uamqp's ``JWTTokenAuth``; we read back the token, audience and
  token type that uamqp would put on the CBS ``put-token`` (no connection is opened).
- Connection strings: ``azure.iot.hub.connection_string.ConnectionString``.
- Device and module tokens: the official device SDK's ``RenewableSasToken`` over its
  ``SymmetricKeySigningMechanism``, for the resource its clients form (``_form_sas_uri``): what a
  device connecting with its own key sends (package ``azure-iot-device``).

Expiries are fixed by replacing ``time`` in those two modules with a frozen clock.

Setup (CPython 3.11): ``pip install azure-iot-hub==2.7.0 six azure-iot-device==2.14.0`` (uamqp
comes with the first).
Run: ``python crates/iothub-auth/scripts/sas_vectors.py``. It prints nothing on success, and two
runs write identical bytes.
"""

import base64
import gc
import json
import os
import types

import uamqp
from azure.iot.hub import constant, iothub_amqp_client, sastoken
from azure.iot.hub.connection_string import ConnectionString
from azure.iot.device import constant as device_constant
from azure.iot.device.common.auth import sastoken as device_sastoken
from azure.iot.device.common.auth.signing_mechanism import SymmetricKeySigningMechanism
from azure.iot.device.iothub.abstract_clients import _form_sas_uri

TTL = 3600  # both SDK modules use this default
OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testdata", "sas_vectors.json")

HOSTS = [
    "contoso-hub.azure-devices.net",
    "localhost:8443",
    "contoso-hub.azure-devices.cn",
    "127.0.0.1:8443",
]
KEY_NAMES = ["iothubowner", "service", "registryReadWrite"]
BASE_EXPIRY = 1_700_000_000


def make_key(length, seed):
    """A fixed, key-looking base64 string of `length` bytes (the SDK only sees the base64)."""
    return base64.b64encode(bytes((seed + 37 * i) % 256 for i in range(length))).decode("ascii")


KEYS = [make_key(16, 1), make_key(32, 2), make_key(64, 3)]


def freeze_time(now):
    frozen = types.SimpleNamespace(time=lambda: now)
    sastoken.time = frozen
    iothub_amqp_client.time = frozen
    device_sastoken.time = frozen


def http_vector(host, key_name, key, expiry):
    freeze_time(expiry - TTL)
    token = sastoken.SasToken(host, key, key_name)
    assert token.expiry_time == expiry
    return {
        "host": host,
        "key_name": key_name,
        "key": key,
        "expiry": expiry,
        "transport": "http",
        "token": str(token),
    }


def amqp_vector(host, key_name, key, expiry):
    freeze_time(expiry - TTL)
    client = iothub_amqp_client.IoTHubAmqpClientSharedAccessKeyAuth(host, key_name, key)
    auth = client.amqp_client._auth
    assert auth.expires_at == expiry
    vector = {
        "host": host,
        "key_name": key_name,
        "key": key,
        "expiry": expiry,
        "transport": "amqp",
        "token": auth.token.decode("utf-8"),
        "audience": auth.audience.decode("utf-8"),
        "token_type": auth.token_type.decode("utf-8"),
    }
    # Free uamqp's C objects now: left to interpreter shutdown they log noise to stderr.
    client.disconnect_sync()
    auth.close()
    del client, auth
    gc.collect()
    return vector


BUILDERS = {"http": http_vector, "amqp": amqp_vector}


def signature(token):
    return token.split("&sig=", 1)[1].split("&", 1)[0]


def sas_vectors():
    vectors = []
    # A grid: every host with every transport; keys, names and expiries rotate deterministically.
    for h, host in enumerate(HOSTS):
        for t, transport in enumerate(["http", "amqp"]):
            for k, key in enumerate(KEYS):
                n = (h * 2 + t) * len(KEYS) + k
                key_name = KEY_NAMES[n % len(KEY_NAMES)]
                vectors.append(BUILDERS[transport](host, key_name, key, BASE_EXPIRY + 7919 * n))

    # Make sure, per transport, some signature has a raw '/' and some an encoded '+', searching
    # expiries upward from a fixed start so the result never changes.
    for transport in ["http", "amqp"]:
        for needle in ["/", "%2B"]:
            expiry = BASE_EXPIRY + 1_000_000
            while True:
                vector = BUILDERS[transport]("localhost:8443", "iothubowner", KEYS[1], expiry)
                if needle in signature(vector["token"]):
                    vectors.append(vector)
                    break
                expiry += 1

    sigs = [signature(v["token"]) for v in vectors]
    assert any("/" in s for s in sigs) and any("%2B" in s for s in sigs)
    assert all(s.endswith("%3D") for s in sigs)  # 32-byte MACs always end in one '=' of padding
    return vectors


CONNECTION_STRINGS = [
    "HostName=contoso-hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + KEYS[1],
    "SharedAccessKey=" + KEYS[0] + ";HostName=localhost:8443;SharedAccessKeyName=service",
    "HostName=contoso-hub.azure-devices.cn;SharedAccessKey=" + KEYS[2] + ";SharedAccessKeyName=registryRead",
    "",
    "HostName=contoso-hub.azure-devices.net",
    "HostName=contoso-hub.azure-devices.net;SharedAccessKey=" + KEYS[1],
    "HostName=contoso-hub.azure-devices.net;SharedAccessKeyName=iothubowner",
    "hostname=contoso-hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=" + KEYS[1],
    "HostName=a;HostName=b;SharedAccessKeyName=iothubowner;SharedAccessKey=" + KEYS[1],
    "HostName=contoso-hub.azure-devices.net;SharedAccessKeyName;SharedAccessKey=" + KEYS[1],
    "HostName=contoso-hub.azure-devices.net;Endpoint=sb://x;SharedAccessKeyName=s;SharedAccessKey=" + KEYS[1],
]


def connection_string_vectors():
    out = []
    for text in CONNECTION_STRINGS:
        try:
            cs = ConnectionString(text)
        except ValueError:
            out.append({"input": text, "accepted": False})
            continue
        out.append(
            {
                "input": text,
                "accepted": True,
                "host": cs["HostName"],
                "key_name": cs["SharedAccessKeyName"],
                "key": cs["SharedAccessKey"],
            }
        )
    return out


# Device and module ids with the characters the hub allows beyond letters and digits.
IDENTITIES = [
    ("sensor-1", None),
    ("dev.with:odd=chars@$'()!*%_", None),
    ("edge-1", "module-a"),
    ("edge 2", "$edgeHub"),
]


def device_vectors():
    out = []
    for n, (device_id, module_id) in enumerate(IDENTITIES):
        for h, host in enumerate(HOSTS):
            expiry = BASE_EXPIRY + 104729 * (n * len(HOSTS) + h)
            freeze_time(expiry - TTL)
            key = KEYS[(n + h) % len(KEYS)]
            uri = _form_sas_uri(hostname=host, device_id=device_id, module_id=module_id)
            token = device_sastoken.RenewableSasToken(uri, SymmetricKeySigningMechanism(key), ttl=TTL)
            assert token.expiry_time == expiry
            out.append(
                {
                    "host": host,
                    "device_id": device_id,
                    "module_id": module_id,
                    "key": key,
                    "expiry": expiry,
                    "token": str(token),
                }
            )
    return out


def main():
    document = {
        "generated_by": "crates/iothub-auth/scripts/sas_vectors.py",
        "package": "azure-iot-hub " + constant.VERSION,
        "uamqp": uamqp.__version__,
        "sas": sas_vectors(),
        "connection_strings": connection_string_vectors(),
        "device_package": "azure-iot-device " + device_constant.VERSION,
        "device_sas": device_vectors(),
    }
    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    with open(OUTPUT, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


if __name__ == "__main__":
    main()
