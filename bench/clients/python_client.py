"""The official Python SDK (azure-iot-hub 2.7.0) as a bench client, used as its users use it:
one IoTHubRegistryManager, a ThreadPoolExecutor for operations in flight.

Same flags as the Rust clients (iothub-bench client --help); the connection string comes from
IOTHUB_CONNECTION_STRING and the emulator's CA from REQUESTS_CA_BUNDLE (HTTPS) and
AMQP_CA_BUNDLE (C2D: uamqp trusts only certifi's bundle, so certifi.where is pointed at it; the
SDK itself is unmodified). Prints one JSON line:
ops, wall_s, cpu_s (user + system of this process, all threads, timed section only, from
getrusage) and peak_rss_kib (VmHWM of /proc/self/status, as every client reports it:
ru_maxrss would also count the parent's memory at fork when the driver spawns with vfork).
"""

import argparse
import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import certifi

if os.environ.get("AMQP_CA_BUNDLE"):
    certifi.where = lambda: os.environ["AMQP_CA_BUNDLE"]

from azure.iot.hub import IoTHubRegistryManager  # noqa: E402
from azure.iot.hub.models import (  # noqa: E402
    ExportImportDevice,
    QuerySpecification,
    Twin,
    TwinProperties,
)

QUERY = "SELECT * FROM devices"
C2D_BODY = '{"command":"refresh","interval":30}'
BULK_CHUNK = 100


def peak_rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def seeded_id(i):
    return "bench-%06d" % i


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def get_device(rm, args):
    ids = [seeded_id(i % args.devices) for i in range(args.size)]
    if args.concurrency <= 1:
        for device_id in ids:
            rm.get_device(device_id)
    else:
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for _ in pool.map(rm.get_device, ids):
                pass
    return args.size


def twin_patch(rm, args, etags):
    spread = len(etags)
    for i in range(args.size):
        d = i % spread
        patch = Twin(properties=TwinProperties(desired={"n": i}))
        twin = rm.update_twin(seeded_id(d), patch, etags[d])
        etags[d] = twin.etag
    return args.size


def query(rm, args):
    seen = 0
    token = None
    while seen < args.size:
        result = rm.query_iot_hub(QuerySpecification(query=QUERY), token, args.page_size)
        seen += min(len(result.items), args.size - seen)
        token = result.continuation_token
        if not token:
            break
    return seen


def bulk_create(rm, args):
    for start in range(0, args.size, BULK_CHUNK):
        chunk = [
            ExportImportDevice(id="%s%06d" % (args.prefix, i), import_mode="create", status="enabled")
            for i in range(start, min(start + BULK_CHUNK, args.size))
        ]
        result = rm.bulk_create_or_update_devices(chunk)
        if not result.is_successful:
            raise RuntimeError("bulk: %r" % (result.errors,))
    return args.size


def c2d(rm, args):
    # send_c2d_message blocks until the hub settles the message: one in flight.
    for i in range(args.size):
        rm.send_c2d_message(seeded_id((args.offset + i) % args.devices), C2D_BODY)
    return args.size


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--prefix", default="bulk-")
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()

    rm = IoTHubRegistryManager.from_connection_string(os.environ["IOTHUB_CONNECTION_STRING"])
    # Untimed, in every client: connection, TLS handshake and lazy initialization.
    rm.get_device(seeded_id(0))
    if args.scenario == "c2d":
        if args.concurrency != 1:
            sys.exit("send_c2d_message blocks: C2D runs with one in flight")
        # Untimed, likewise: the AMQP connection, CBS authorization and the link.
        rm.send_c2d_message(seeded_id((args.offset + args.size) % args.devices), C2D_BODY)
    etags = None
    if args.scenario == "twin_patch":
        # Untimed, as in every client: the etag of each twin written.
        spread = max(1, min(args.devices, args.size))
        etags = [rm.get_twin(seeded_id(d)).etag for d in range(spread)]

    cpu_before = cpu_seconds()
    started = time.perf_counter()
    if args.scenario == "get_device":
        ops = get_device(rm, args)
    elif args.scenario == "twin_patch":
        ops = twin_patch(rm, args, etags)
    elif args.scenario == "query":
        ops = query(rm, args)
    elif args.scenario == "bulk_create":
        ops = bulk_create(rm, args)
    elif args.scenario == "c2d":
        ops = c2d(rm, args)
    else:
        sys.exit("unknown scenario %s" % args.scenario)
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    print(json.dumps({"ops": ops, "wall_s": wall, "cpu_s": cpu, "peak_rss_kib": peak_rss_kib()}))


if __name__ == "__main__":
    main()
