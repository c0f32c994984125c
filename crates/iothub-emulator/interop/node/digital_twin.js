// The official Node SDKs' digital twins against the emulator: azure-iothub's
// DigitalTwinClient (getDigitalTwin, updateDigitalTwin, invokeCommand, invokeComponentCommand),
// with a Plug and Play device in the same process built on azure-iot-device with its
// `modelId` option (MQTT to the emulator's 8883): it answers commands and acknowledges
// writable properties as the PnP conventions say.
//
// Environment: IOTHUB_CONNECTION_STRING (a service policy), NODE_EXTRA_CA_CERTS (the
// emulator's CA, also given to the device as `ca`).
//
// Prints one line per named check, then "node-dt: N passed, M failed".

'use strict';

const assert = require('assert');
const crypto = require('crypto');
const fs = require('fs');
const { DigitalTwinClient, IoTHubTokenCredentials, Registry } = require('azure-iothub');
const { Client } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const cs = process.env.IOTHUB_CONNECTION_STRING;
const host = /HostName=([^;]+)/.exec(cs)[1];
const ca = fs.readFileSync(process.env.NODE_EXTRA_CA_CERTS, 'utf8');
const MODEL = 'dtmi:com:example:TemperatureController;2';
const deviceId = `node-dt-${crypto.randomBytes(4).toString('hex')}`;
const registry = Registry.fromConnectionString(cs);
const dt = new DigitalTwinClient(new IoTHubTokenCredentials(cs));
const results = [];

async function check(name, fn) {
  try {
    await fn();
    results.push([name, null]);
    console.log(`ok   ${name}`);
  } catch (err) {
    results.push([name, err]);
    console.log(`FAIL ${name}: ${err && err.stack ? err.stack : err}`);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function eventually(what, fn) {
  for (let i = 0; i < 50; i++) {
    const v = await fn();
    if (v) return v;
    await sleep(200);
  }
  throw new Error(`never: ${what}`);
}

// Desired-property patches the device received, for the checks to wait on.
const patches = [];
async function nextPatch(pred) {
  return eventually('a desired-properties patch', async () => {
    const i = patches.findIndex(pred);
    return i >= 0 ? patches.splice(i, 1)[0] : null;
  });
}

async function mustFail(promise, status) {
  try {
    await promise;
  } catch (err) {
    const got = err.statusCode || (err.response && err.response.status);
    assert.strictEqual(got, status, `${err.message}`);
    return;
  }
  throw new Error(`expected ${status}, got success`);
}

let client;
let twin;

// ms-rest-js puts a command's answer in `body` (a parsed object) beside the typed headers.
const payload = (r) => (r && 'body' in r ? r.body : r && r.result);
const describe = (r) => JSON.stringify({ ...r, _response: undefined });

async function connect() {
  await registry.create({ deviceId });
  const { responseBody: d } = await registry.get(deviceId);
  const key = d.authentication.symmetricKey.primaryKey;
  client = Client.fromConnectionString(`HostName=${host};DeviceId=${deviceId};SharedAccessKey=${key}`, Mqtt);
  // setOptions is asynchronous: awaited before open().
  await client.setOptions({ ca, modelId: MODEL });
  await client.open();
  client.onDeviceMethod('reboot', (req, res) => res.send(200, { rebooting: true, delay: req.payload }, () => {}));
  client.onDeviceMethod('thermostat1*getMaxMinReport', (req, res) =>
    res.send(201, { maxTemp: 30.5, since: req.payload }, () => {}));
  twin = await client.getTwin();
  twin.on('properties.desired', (patch) => {
    // Acknowledge each writable property, at the root and in components.
    const version = patch.$version;
    const ack = {};
    for (const [k, v] of Object.entries(patch)) {
      if (k.startsWith('$')) continue;
      if (v && typeof v === 'object' && v.__t === 'c') {
        ack[k] = { __t: 'c' };
        for (const [ck, cv] of Object.entries(v)) {
          if (ck !== '__t') ack[k][ck] = { value: cv, ac: 200, av: version, ad: 'done' };
        }
      } else {
        ack[k] = { value: v, ac: 200, av: version, ad: 'done' };
      }
    }
    patches.push(patch);
    if (Object.keys(ack).length) twin.properties.reported.update(ack, () => {});
  });
  await new Promise((resolve, reject) => twin.properties.reported.update(
    { serialNumber: 'SN-7', thermostat1: { __t: 'c', temperature: 19.5 } },
    (err) => (err ? reject(err) : resolve())));
  const { responseBody: t } = await registry.getTwin(deviceId);
  assert.strictEqual(t.modelId, MODEL);
}

async function main() {
  await check('device connects with modelId; the twin shows modelId', connect);

  await check('getDigitalTwin: $dtId, $model, reported root and component', async () => {
    const d = await dt.getDigitalTwin(deviceId);
    assert.strictEqual(d.$dtId, deviceId);
    assert.strictEqual(d.$metadata.$model, MODEL);
    assert.strictEqual(d.serialNumber, 'SN-7');
    assert.strictEqual(d.thermostat1.temperature, 19.5);
    assert.ok(d._response.headers.get('etag').startsWith('"'));
  });

  await check('updateDigitalTwin add at the root, the device acknowledges', async () => {
    await dt.updateDigitalTwin(deviceId, [{ op: 'add', path: '/targetTemperature', value: 22 }]);
    await nextPatch((p) => p.targetTemperature === 22);
    const d = await eventually('acknowledged', async () => {
      const d = await dt.getDigitalTwin(deviceId);
      const m = d.$metadata.targetTemperature || {};
      return m.ackCode === 200 ? d : null;
    });
    const m = d.$metadata.targetTemperature;
    assert.strictEqual(d.targetTemperature, 22);
    assert.strictEqual(m.desiredValue, 22);
    assert.strictEqual(m.ackVersion, m.desiredVersion);
  });

  await check('updateDigitalTwin add in a component, the device acknowledges', async () => {
    await dt.updateDigitalTwin(deviceId, [{ op: 'add', path: '/thermostat1/targetTemperature', value: 40 }]);
    await nextPatch((p) => p.thermostat1 && p.thermostat1.targetTemperature === 40);
    const d = await eventually('component acknowledged', async () => {
      const d = await dt.getDigitalTwin(deviceId);
      const m = d.thermostat1.$metadata.targetTemperature || {};
      return m.ackCode === 200 ? d : null;
    });
    assert.strictEqual(d.thermostat1.targetTemperature, 40);
  });

  await check('updateDigitalTwin with an etag: current accepted, stale 412', async () => {
    const d = await dt.getDigitalTwin(deviceId);
    const etag = d._response.headers.get('etag');
    // The SDK resolves updateDigitalTwin with nothing (a 202 has no body): the new etag is
    // read back.
    await dt.updateDigitalTwin(deviceId, [{ op: 'replace', path: '/targetTemperature', value: 23 }], etag);
    const after = await dt.getDigitalTwin(deviceId);
    assert.notStrictEqual(after._response.headers.get('etag'), etag);
    await mustFail(dt.updateDigitalTwin(deviceId, [{ op: 'remove', path: '/targetTemperature' }], etag), 412);
  });

  await check('updateDigitalTwin invalid patch: 400', async () => {
    await mustFail(dt.updateDigitalTwin(deviceId, [{ op: 'remove', path: '/nothing' }]), 400);
  });

  await check('invokeCommand at the root', async () => {
    const r = await dt.invokeCommand(deviceId, 'reboot', 5, { connectTimeoutInSeconds: 5, responseTimeoutInSeconds: 10 });
    assert.deepStrictEqual(payload(r), { rebooting: true, delay: 5 }, describe(r));
    assert.strictEqual(Number(r.xMsCommandStatuscode), 200, describe(r));
  });

  await check('invokeComponentCommand', async () => {
    const r = await dt.invokeComponentCommand(deviceId, 'thermostat1', 'getMaxMinReport', '2026-01-01');
    assert.deepStrictEqual(payload(r), { maxTemp: 30.5, since: '2026-01-01' }, describe(r));
    assert.strictEqual(Number(r.xMsCommandStatuscode), 201, describe(r));
    assert.ok(r.xMsRequestId);
  });

  await check('invokeCommand on an offline device: 404', async () => {
    await client.close();
    await eventually('disconnected', async () =>
      (await registry.get(deviceId)).responseBody.connectionState === 'Disconnected');
    await mustFail(dt.invokeCommand(deviceId, 'reboot', {}, { connectTimeoutInSeconds: 0 }), 404);
  });

  try { await registry.delete(deviceId); } catch (_) { /* cleanup only */ }
  const failed = results.filter(([, err]) => err).length;
  console.log(`node-dt: ${results.length - failed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main().catch((err) => {
  console.log(`node-dt: crashed: ${err && err.stack}`);
  process.exitCode = 2;
});
