// The official Node SDK (azure-iothub 1.16.x) as a bench client, used as its users use it:
// one Registry, promises for operations in flight (a pool of async workers).
//
// Same flags as the Rust clients (iothub-bench client --help); the connection string comes
// from IOTHUB_CONNECTION_STRING, the emulator's CA from NODE_EXTRA_CA_CERTS (HTTPS and AMQP),
// and the SDK
// from NODE_PATH (the interop suite's node_modules). Prints one JSON line: ops, wall_s, cpu_s
// (process.cpuUsage: user + system of this process, timed section only) and peak_rss_kib
// (VmHWM of /proc/self/status, as every client reports it: resourceUsage().maxRSS would also
// count the parent's memory at fork when the driver spawns with vfork).
'use strict';

const fs = require('fs');
const { Client, Registry } = require('azure-iothub');

const QUERY = 'SELECT * FROM devices';
const C2D_BODY = '{"command":"refresh","interval":30}';
const BULK_CHUNK = 100;

const seededId = (i) => `bench-${String(i).padStart(6, '0')}`;

function peakRssKib() {
  const line = fs.readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('VmHWM:'));
  return Number(line.split(/\s+/)[1]);
}

function parseArgs(argv) {
  const args = { concurrency: 1, devices: 1000, prefix: 'bulk-', pageSize: 1000, offset: 0 };
  for (let i = 0; i < argv.length; i += 2) {
    const value = argv[i + 1];
    switch (argv[i]) {
      case '--scenario': args.scenario = value; break;
      case '--size': args.size = Number(value); break;
      case '--concurrency': args.concurrency = Number(value); break;
      case '--devices': args.devices = Number(value); break;
      case '--prefix': args.prefix = value; break;
      case '--offset': args.offset = Number(value); break;
      case '--page-size': args.pageSize = Number(value); break;
      default: throw new Error(`unknown flag ${argv[i]}`);
    }
  }
  return args;
}

async function getDevice(registry, args) {
  let next = 0;
  const worker = async () => {
    while (next < args.size) {
      const i = next++;
      await registry.get(seededId(i % args.devices));
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, args.concurrency) }, worker));
  return args.size;
}

async function twinPatch(registry, args, etags) {
  for (let i = 0; i < args.size; i++) {
    const d = i % etags.length;
    const { responseBody: twin } = await registry.updateTwin(seededId(d), { properties: { desired: { n: i } } }, etags[d]);
    etags[d] = twin.etag;
  }
  return args.size;
}

async function query(registry, args) {
  const q = registry.createQuery(QUERY, args.pageSize);
  let seen = 0;
  while (seen < args.size && q.hasMoreResults) {
    const { result } = await q.nextAsTwin();
    seen += Math.min(result.length, args.size - seen);
  }
  return seen;
}

async function bulkCreate(registry, args) {
  for (let start = 0; start < args.size; start += BULK_CHUNK) {
    const chunk = [];
    for (let i = start; i < Math.min(start + BULK_CHUNK, args.size); i++) {
      chunk.push({ deviceId: `${args.prefix}${String(i).padStart(6, '0')}`, status: 'enabled' });
    }
    const { responseBody: result } = await registry.addDevices(chunk);
    if (!result.isSuccessful) {
      throw new Error(`bulk: ${JSON.stringify(result.errors)}`);
    }
  }
  return args.size;
}

// One AMQP connection; `concurrency` sends in flight on it.
async function c2d(client, args) {
  let next = 0;
  const worker = async () => {
    while (next < args.size) {
      const i = next++;
      await client.send(seededId((args.offset + i) % args.devices), C2D_BODY);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, args.concurrency) }, worker));
  return args.size;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const registry = Registry.fromConnectionString(process.env.IOTHUB_CONNECTION_STRING);
  // Untimed, in every client: connection, TLS handshake and lazy initialization.
  await registry.get(seededId(0));
  let client = null;
  if (args.scenario === 'c2d') {
    // Untimed, likewise: the AMQP connection, CBS authorization and the link.
    client = Client.fromConnectionString(process.env.IOTHUB_CONNECTION_STRING);
    await client.open();
    await client.send(seededId((args.offset + args.size) % args.devices), C2D_BODY);
  }
  let etags = null;
  if (args.scenario === 'twin_patch') {
    // Untimed, as in every client: the etag of each twin written.
    etags = [];
    const spread = Math.max(1, Math.min(args.devices, args.size));
    for (let d = 0; d < spread; d++) {
      etags.push((await registry.getTwin(seededId(d))).responseBody.etag);
    }
  }
  const scenarios = {
    get_device: () => getDevice(registry, args),
    twin_patch: () => twinPatch(registry, args, etags),
    query: () => query(registry, args),
    bulk_create: () => bulkCreate(registry, args),
    c2d: () => c2d(client, args),
  };
  const run = scenarios[args.scenario];
  if (!run) {
    throw new Error(`unknown scenario ${args.scenario}`);
  }
  const cpuBefore = process.cpuUsage();
  const started = process.hrtime.bigint();
  const ops = await run();
  const wall = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuBefore);
  if (client) {
    await client.close();
  }
  console.log(JSON.stringify({
    ops,
    wall_s: wall,
    cpu_s: (cpu.user + cpu.system) / 1e6,
    peak_rss_kib: peakRssKib(),
  }));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
