// The official Node device SDK, azure-iot-device 1.18.4 with azure-iot-device-mqtt 1.16.4,
// unmodified, against the iothub-emulator's device endpoint: the `Mqtt` transport (8883) and
// `MqttWs` (443, `/$iothub/websocket`), the emulator's CA given as the `ca` option.
//
// The service side is not in this script: it is driven by `iothub-registry` in the Rust test
// that runs it (tests/it/device_interop.rs). When a check needs the service, the script
// prints one line `SERVICE {json}` on stdout and reads one line of JSON back on stdin
// (`{"ok": true, "value": ...}` or `{"ok": false, "error": "..."}`); the operations are those
// of interop/python/device.py (telemetry, c2d, feedback, reported, desired, method).
//
// Environment: IOTHUB_DEVICE_INTEROP, JSON written by the test: `ca` (the CA's PEM file), and
// per transport (`mqtt`, `ws`) the SAS device's and the module's connection strings and ids,
// and the X.509 device's id, host, certificate and key files. Prints one line per check, then
// "node-device: N passed, M failed"; exits non-zero on any failure.
'use strict';

const assert = require('assert');
const crypto = require('crypto');
const fs = require('fs');
const readline = require('readline');
const { Client, ModuleClient, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');

const config = JSON.parse(process.env.IOTHUB_DEVICE_INTEROP);
const ca = fs.readFileSync(config.ca, 'utf8');
// Long enough for a retried connect, short enough that a missing feature fails the check
// instead of hanging the suite.
const WAIT_MS = 20000;
const results = [];

// One answer per SERVICE line, in order.
const answers = [];
const waiting = [];
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const next = waiting.shift();
  if (next) next(line); else answers.push(line);
});

function service(op, args) {
  console.log(`SERVICE ${JSON.stringify({ ...args, op })}`);
  return new Promise((resolve) => {
    const queued = answers.shift();
    if (queued !== undefined) resolve(queued); else waiting.push(resolve);
  }).then((line) => {
    const answer = JSON.parse(line);
    if (!answer.ok) throw new Error(`service ${op}: ${answer.error}`);
    return answer.value;
  });
}

async function check(name, fn) {
  try {
    await fn();
    results.push([name, null]);
    console.log(`PASS ${name}`);
  } catch (err) {
    results.push([name, err]);
    console.log(`FAIL ${name}: ${err && err.stack ? err.stack : err}`);
  }
}

// Resolves with the first event value `accept` takes, or fails after WAIT_MS.
function waitFor(list, accept, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${what} within ${WAIT_MS} ms`)), WAIT_MS);
    const poll = () => {
      const i = list.findIndex(accept);
      if (i >= 0) {
        clearTimeout(timer);
        resolve(list.splice(i, 1)[0]);
      } else {
        list.onPush = poll;
      }
    };
    poll();
  });
}

// An array that wakes one waiter on push.
function inbox() {
  const list = [];
  list.put = (v) => {
    list.push(v);
    const wake = list.onPush;
    list.onPush = null;
    if (wake) wake();
  };
  return list;
}

class Device {
  constructor(client, deviceId, moduleId) {
    this.client = client;
    this.deviceId = deviceId;
    this.moduleId = moduleId;
    this.c2d = inbox();
    this.desired = inbox();
    this.methods = inbox();
    this.twin = null;
  }

  target() {
    return this.moduleId ? { device: this.deviceId, module: this.moduleId } : { device: this.deviceId };
  }

  async handlers(c2d) {
    if (c2d) {
      this.client.on('message', (msg) => {
        this.c2d.put(msg);
        // Over MQTT the PUBACK already completed it; complete() is the SDK's documented call.
        this.client.complete(msg, () => {});
      });
    }
    const onMethod = (request, response) => {
      this.methods.put(request.payload);
      // The answer carries the request's payload back, so the service sees it crossed both ways.
      response.send(200, { echo: request.payload, method: request.methodName }, () => {});
    };
    if (this.moduleId) this.client.onMethod('reboot', onMethod);
    else this.client.onDeviceMethod('reboot', onMethod);
    this.twin = await this.client.getTwin();
    this.twin.on('properties.desired', (patch) => this.desired.put(patch));
  }
}

async function telemetry(dev) {
  const marker = `node-${crypto.randomBytes(6).toString('hex')}`;
  const msg = new Message(JSON.stringify({ marker }));
  msg.properties.add('marker', marker);
  msg.messageId = marker;
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  await dev.client.sendEvent(msg);
  await service('telemetry', { ...dev.target(), marker });
}

async function getTwin(dev) {
  const twin = await dev.client.getTwin();
  assert.ok(twin.properties.desired.$version !== undefined, 'desired without $version');
  assert.ok(twin.properties.reported.$version !== undefined, 'reported without $version');
}

async function report(dev) {
  const value = crypto.randomBytes(4).toString('hex');
  const twin = await dev.client.getTwin();
  await new Promise((resolve, reject) =>
    twin.properties.reported.update({ nodeReported: value, nested: { n: 1 } }, (err) =>
      err ? reject(err) : resolve()));
  await service('reported', { ...dev.target(), key: 'nodeReported', value });
}

async function desired(dev) {
  const value = crypto.randomBytes(4).toString('hex');
  // The first event after subscribing is the whole desired section; drop what came before.
  dev.desired.length = 0;
  const seen = waitFor(dev.desired, (p) => p && p.nodeDesired === value, 'desired patch');
  await service('desired', { ...dev.target(), key: 'nodeDesired', value });
  const patch = await seen;
  assert.ok(patch.$version !== undefined, `patch without $version: ${JSON.stringify(patch)}`);
}

async function method(dev) {
  const payload = { n: 7, text: crypto.randomBytes(3).toString('hex') };
  const result = await service('method', { ...dev.target(), name: 'reboot', payload });
  assert.strictEqual(result.status, 200, JSON.stringify(result));
  assert.deepStrictEqual(result.payload, { echo: payload, method: 'reboot' });
  const got = await waitFor(dev.methods, () => true, 'method request');
  assert.deepStrictEqual(got, payload);
}

async function suite(transport) {
  const cfg = config[transport];
  const Transport = transport === 'ws' ? MqttWs : Mqtt;
  const name = `node ${transport}`;
  let dev = null;
  const withDev = (f) => async () => {
    assert.ok(dev, 'not connected');
    await f(dev);
  };

  // setOptions is asynchronous (it first tries `ca` as a file name): awaited before open().
  await check(`${name}: connect with SAS`, async () => {
    const client = Client.fromConnectionString(cfg.device_cs, Transport);
    await client.setOptions({ ca });
    await client.open();
    dev = new Device(client, cfg.device_id);
    await dev.handlers(true);
  });
  await check(`${name}: telemetry reaches the hub`, withDev(telemetry));
  const mid = `${transport}-c2d-${crypto.randomBytes(4).toString('hex')}`;
  let received = false;
  await check(`${name}: receive a C2D message from send_c2d_message`, withDev(async (d) => {
    const got = waitFor(d.c2d, (m) => m.messageId === mid, 'C2D message');
    await service('c2d', { ...d.target(), message_id: mid, body: `hello ${mid}` });
    const msg = await got;
    assert.strictEqual(msg.data.toString(), `hello ${mid}`);
    received = true;
  }));
  await check(`${name}: positive feedback of the C2D message`, withDev(async (d) => {
    assert.ok(received, 'no message was received');
    await service('feedback', { ...d.target(), message_id: mid });
  }));
  await check(`${name}: get the twin`, withDev(getTwin));
  await check(`${name}: reported properties read by get_twin`, withDev(report));
  await check(`${name}: desired patch made by update_twin`, withDev(desired));
  await check(`${name}: direct method from invoke_device_method`, withDev(method));
  if (dev) await dev.client.close().catch(() => {});

  let x509 = null;
  await check(`${name}: connect with X.509 (self-signed)`, async () => {
    const client = Client.fromConnectionString(
      `HostName=${cfg.host};DeviceId=${cfg.x509_device_id};x509=true`, Transport);
    await client.setOptions({
      ca,
      cert: fs.readFileSync(cfg.x509_cert, 'utf8'),
      key: fs.readFileSync(cfg.x509_key, 'utf8'),
    });
    await client.open();
    x509 = new Device(client, cfg.x509_device_id);
  });
  await check(`${name}: X.509 device telemetry`, async () => {
    assert.ok(x509, 'not connected');
    await telemetry(x509);
  });
  if (x509) await x509.client.close().catch(() => {});

  let mod = null;
  const withMod = (f) => async () => {
    assert.ok(mod, 'not connected');
    await f(mod);
  };
  await check(`${name}: module connects with SAS`, async () => {
    const client = ModuleClient.fromConnectionString(cfg.module_cs, Transport);
    await client.setOptions({ ca });
    await client.open();
    mod = new Device(client, cfg.device_id, cfg.module_id);
    await mod.handlers(false);
  });
  await check(`${name}: module telemetry`, withMod(telemetry));
  await check(`${name}: module gets its twin`, withMod(getTwin));
  await check(`${name}: module reported read by get_module_twin`, withMod(report));
  await check(`${name}: module desired patch from update_module_twin`, withMod(desired));
  await check(`${name}: module direct method`, withMod(method));
  if (mod) await mod.client.close().catch(() => {});
}

(async () => {
  for (const transport of ['mqtt', 'ws']) {
    await suite(transport);
  }
  const failed = results.filter(([, err]) => err).length;
  console.log(`node-device: ${results.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
