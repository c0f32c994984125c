// The official Node `azure-iothub` Registry (1.16.x), unmodified, against iothub-emulator:
// create, get, update, delete, list, getTwin, updateTwin, query with paging,
// addDevices/updateDevices/removeDevices, statistics and the configuration methods
// (addConfiguration, getConfiguration(s), updateConfiguration with and without force,
// removeConfiguration, applyConfigurationContentOnDevice), with the service's values and
// failures; and jobs: JobClient's scheduleTwinUpdate, scheduleDeviceMethod, getJob, cancelJob
// and createQuery, the Registry's exportDevicesToBlob, importDevicesFromBlob, getJob,
// listJobs and cancelJob (with Azurite as the storage account). Environment:
// IOTHUB_CONNECTION_STRING and NODE_EXTRA_CA_CERTS (the emulator's CA), and
// IOTHUB_INTEROP_BLOB_IN/_OUT (container SAS URLs) or IOTHUB_INTEROP_NO_BLOB=1. Prints one
// line per check, then "node: N passed, M failed".
'use strict';

const assert = require('assert');
const crypto = require('crypto');
const http = require('http');
const https = require('https');
const { Client, JobClient, Registry } = require('azure-iothub');
const { Message } = require('azure-iothub/dist/common-core/message');

const cs = process.env.IOTHUB_CONNECTION_STRING;
const host = /HostName=([^;]+)/.exec(cs)[1];
const registry = Registry.fromConnectionString(cs);
const run = crypto.randomBytes(4).toString('hex');
const dev = (name) => `node-${run}-${name}`;
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

// Awaits a call that must fail; checks the error class Node maps the status to, and the
// iothub-errorcode header when given.
async function expectError(promise, className, status, code) {
  try {
    await promise;
  } catch (err) {
    assert.strictEqual(err.constructor.name, className, `${err.constructor.name}: ${err.message}`);
    assert.strictEqual(err.response.statusCode, status);
    if (code) {
      assert.strictEqual(err.response.headers['iothub-errorcode'], code);
    }
    return err;
  }
  throw new Error(`expected ${className}, got success`);
}

// The emulator's control API (what the device does); trusted through NODE_EXTRA_CA_CERTS.
function control(method, path, json) {
  return new Promise((resolve, reject) => {
    const req = https.request({ host, method, path: `/_emulator${path}` }, (res) => {
      let body = '';
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => (res.statusCode < 300 ? resolve(body ? JSON.parse(body) : null)
        : reject(new Error(`${method} ${path}: ${res.statusCode} ${body}`))));
    });
    req.on('error', reject);
    req.end(json === undefined ? undefined : JSON.stringify(json));
  });
}

// Calls a callback-style method and resolves with its first result.
function call(fn) {
  return new Promise((resolve, reject) => fn((err, result) => (err ? reject(err) : resolve(result))));
}

async function main() {
  await check('create and get', async () => {
    const { responseBody: d, httpResponse } = await registry.create({ deviceId: dev('a') });
    assert.strictEqual(httpResponse.statusCode, 200);
    assert.strictEqual(d.deviceId, dev('a'));
    assert.strictEqual(d.status, 'enabled');
    assert.strictEqual(d.authentication.type, 'sas');
    assert.ok(d.authentication.symmetricKey.primaryKey.length > 20);
    const { responseBody: got } = await registry.get(dev('a'));
    assert.strictEqual(got.etag, d.etag);
  });

  await check('create an existing device: DeviceAlreadyExistsError', async () => {
    await expectError(registry.create({ deviceId: dev('a') }), 'DeviceAlreadyExistsError', 409, 'DeviceAlreadyExists');
  });

  await check('update (Node always sends If-Match "*"; an etag in the body is ignored)', async () => {
    const { responseBody: d } = await registry.get(dev('a'));
    const { responseBody: u } = await registry.update({ deviceId: dev('a'), status: 'disabled', etag: d.etag });
    assert.strictEqual(u.status, 'disabled');
    assert.notStrictEqual(u.etag, d.etag);
    // The etag is stale now, but it travels in the body, where the service ignores it.
    const { responseBody: again } = await registry.update({ deviceId: dev('a'), status: 'enabled', etag: d.etag });
    assert.strictEqual(again.status, 'enabled');
  });

  await check('get a missing device: DeviceNotFoundError', async () => {
    await expectError(registry.get(dev('missing')), 'DeviceNotFoundError', 404, 'DeviceNotFound');
  });

  await check('list', async () => {
    await registry.create({ deviceId: dev('b') });
    const { responseBody: list } = await registry.list();
    const ids = list.map((d) => d.deviceId);
    assert.ok(ids.includes(dev('a')) && ids.includes(dev('b')));
  });

  await check('getTwin and updateTwin with etags', async () => {
    const { responseBody: twin } = await registry.getTwin(dev('a'));
    assert.strictEqual(twin.deviceId, dev('a'));
    assert.strictEqual(twin.etag, 'AAAAAAAAAAE=');
    const patch = { tags: { team: 'node', run }, properties: { desired: { rate: 7 } } };
    const { responseBody: updated } = await registry.updateTwin(dev('a'), patch, twin.etag);
    assert.strictEqual(updated.tags.team, 'node');
    assert.strictEqual(updated.properties.desired.rate, 7);
    assert.notStrictEqual(updated.etag, twin.etag);
    await expectError(registry.updateTwin(dev('a'), { tags: { x: 1 } }, twin.etag), 'InvalidEtagError', 412);
    const { responseBody: again } = await registry.updateTwin(dev('a'), { tags: { team: null } }, '*');
    assert.strictEqual(again.tags.team, undefined);
  });

  await check('Twin.update through the twin object', async () => {
    const { responseBody: twin } = await registry.getTwin(dev('b'));
    const before = twin.etag;
    const updated = await new Promise((resolve, reject) => {
      twin.update({ tags: { run, via: 'twin' } }, (err, t) => (err ? reject(err) : resolve(t)));
    });
    assert.strictEqual(updated.tags.via, 'twin');
    assert.notStrictEqual(updated.etag, before);
    // The twin object now holds the new etag; a second update with the old one fails.
    await expectError(registry.updateTwin(dev('b'), { tags: { x: 1 } }, before), 'InvalidEtagError', 412,
      'PreconditionFailed');
  });

  await check('addDevices, updateDevices, removeDevices (create / Update / Delete)', async () => {
    const devices = [0, 1, 2].map((i) => ({ deviceId: dev(`bulk${i}`), status: 'enabled' }));
    const { responseBody: added } = await registry.addDevices(devices);
    assert.strictEqual(added.isSuccessful, true);
    assert.deepStrictEqual(added.errors, []);
    const { responseBody: updated } = await registry.updateDevices(
      devices.map((d) => ({ ...d, status: 'disabled' })), true);
    assert.strictEqual(updated.isSuccessful, true);
    const { responseBody: d1 } = await registry.get(dev('bulk1'));
    assert.strictEqual(d1.status, 'disabled');
    // Conditional update with the etag the device GET returned (Node sends `etag`).
    const { responseBody: cond } = await registry.updateDevices([{ ...d1, status: 'enabled' }], false);
    assert.strictEqual(cond.isSuccessful, true, JSON.stringify(cond));
    await expectError(registry.updateDevices([{ ...d1, status: 'enabled' }], false), 'ArgumentError', 400);
    const { responseBody: removed } = await registry.removeDevices(devices, true);
    assert.strictEqual(removed.isSuccessful, true);
    await expectError(registry.get(dev('bulk0')), 'DeviceNotFoundError', 404);
  });

  await check('query with paging (nextAsTwin, continuation tokens)', async () => {
    const ids = [0, 1, 2, 3, 4].map((i) => dev(`q${i}`));
    for (const id of ids) {
      await registry.create({ deviceId: id });
      await registry.updateTwin(id, { tags: { batch: run } }, '*');
    }
    const query = registry.createQuery(`SELECT * FROM devices WHERE tags.batch = '${run}'`, 2);
    const seen = [];
    let pages = 0;
    while (query.hasMoreResults) {
      const { result } = await query.nextAsTwin();
      pages += 1;
      for (const twin of result) {
        assert.strictEqual(typeof twin.update, 'function');
        seen.push(twin.deviceId);
      }
      assert.ok(pages < 10, 'paging must end');
    }
    assert.deepStrictEqual(seen, ids);
    assert.strictEqual(pages, 3);
    const count = registry.createQuery(`SELECT COUNT() AS n FROM devices WHERE tags.batch = '${run}'`);
    const { result } = await count.next();
    assert.deepStrictEqual(result, [{ n: 5 }]);
    await expectError(registry.createQuery('SELECT * FROM').next(), 'ArgumentError', 400);
  });

  await check('getRegistryStatistics', async () => {
    const { responseBody: stats } = await registry.getRegistryStatistics();
    assert.ok(stats.totalDeviceCount >= 7);
    assert.strictEqual(stats.enabledDeviceCount + stats.disabledDeviceCount, stats.totalDeviceCount);
  });

  await check('Client.send, the hub\'s copy, and feedback on getFeedbackReceiver', async () => {
    const client = Client.fromConnectionString(cs);
    await call((done) => client.open(done));
    try {
      const message = new Message('hello from node');
      message.messageId = `node-${run}`;
      message.ack = 'full';
      message.properties.add('region', 'south');
      await call((done) => client.send(dev('a'), message, done));
      const hubCopy = (await control('GET', '/c2d')).find((m) => m.deviceId === dev('a'));
      assert.strictEqual(hubCopy.messageId, `node-${run}`);
      assert.strictEqual(hubCopy.applicationProperties['iothub-ack'], 'full');
      assert.strictEqual(hubCopy.applicationProperties.region, 'south');
      assert.strictEqual(Buffer.from(hubCopy.body, 'base64').toString(), 'hello from node');
      // The device takes the message and completes it: the hub sends Success feedback.
      const received = await control('POST', `/devices/${encodeURIComponent(dev('a'))}/messages/receive`);
      await control('POST', `/messages/${received.lockToken}/complete`);
      const receiver = await call((done) => client.getFeedbackReceiver(done));
      const records = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no feedback within 10 s')), 10000);
        receiver.on('errorReceived', reject);
        receiver.on('message', (msg) => {
          clearTimeout(timer);
          receiver.complete(msg, () => resolve(JSON.parse(msg.data.toString())));
        });
      });
      const record = records.find((r) => r.originalMessageId === `node-${run}`);
      assert.ok(record, JSON.stringify(records));
      assert.strictEqual(record.statusCode, 'Success');
      assert.strictEqual(record.deviceId, dev('a'));
      try {
        await call((done) => client.send(dev('nobody'), new Message('x'), done));
        throw new Error('sending to an unknown device succeeded');
      } catch (err) {
        assert.strictEqual(err.constructor.name, 'DeviceNotFoundError', String(err));
      }
    } finally {
      await call((done) => client.close(done)).catch(() => {});
    }
  });

  // Configurations (automatic device management, edge deployments).
  const cfg = (name) => `node-${run}-${name}`;
  const admConfig = (name, priority, value) => ({
    id: cfg(name),
    labels: { suite: 'node' },
    content: { deviceContent: { 'properties.desired.fw': value } },
    targetCondition: `tags.suite = 'node-${run}'`,
    priority,
    metrics: { queries: { current: `SELECT deviceId FROM devices WHERE properties.reported.fw = '${value}'` } },
  });

  await check('addConfiguration and getConfiguration', async () => {
    await registry.create({ deviceId: dev('cfg') });
    await registry.updateTwin(dev('cfg'), { tags: { suite: `node-${run}` } }, '*');
    const { responseBody: created, httpResponse } = await registry.addConfiguration(admConfig('adm', 5, '2.0'));
    assert.strictEqual(httpResponse.statusCode, 200);
    assert.strictEqual(created.id, cfg('adm'));
    assert.strictEqual(created.etag, 'MQ==');
    assert.strictEqual(created.schemaVersion, '1.0');
    assert.deepStrictEqual(created.systemMetrics.results, { appliedCount: 1, targetedCount: 1 });
    const { responseBody: got } = await registry.getConfiguration(cfg('adm'));
    assert.strictEqual(got.etag, created.etag);
    assert.deepStrictEqual(got.content.deviceContent, { 'properties.desired.fw': '2.0' });
    const { responseBody: twin } = await registry.getTwin(dev('cfg'));
    assert.strictEqual(twin.properties.desired.fw, '2.0');
    await expectError(registry.addConfiguration(admConfig('adm', 5, '2.0')), 'DeviceAlreadyExistsError', 409,
      'ConfigurationAlreadyExists');
    await expectError(registry.getConfiguration(cfg('nope')), 'Error', 404, 'ConfigurationNotFound');
  });

  await check('getConfigurations', async () => {
    await registry.addConfiguration(admConfig('low', 1, '1.0'));
    const { responseBody: list } = await registry.getConfigurations();
    const ids = list.map((c) => c.id);
    assert.ok(ids.includes(cfg('adm')) && ids.includes(cfg('low')), JSON.stringify(ids));
    const low = list.find((c) => c.id === cfg('low'));
    assert.deepStrictEqual(low.systemMetrics.results, { appliedCount: 0, targetedCount: 1 });
  });

  await check('updateConfiguration with its etag (not forced): quoted and compared', async () => {
    const { responseBody: current } = await registry.getConfiguration(cfg('adm'));
    current.priority = 7;
    const { responseBody: updated } = await registry.updateConfiguration(current);
    assert.strictEqual(updated.priority, 7);
    assert.notStrictEqual(updated.etag, current.etag);
    // The old etag is stale now.
    await expectError(registry.updateConfiguration(current), 'InvalidEtagError', 412, 'PreconditionFailed');
  });

  await check('updateConfiguration forced (If-Match "*"), and the content stays as created', async () => {
    const { responseBody: current } = await registry.getConfiguration(cfg('low'));
    const stale = { ...current, etag: 'c3RhbGU=', priority: 9 };
    const { responseBody: updated } = await registry.updateConfiguration(stale, true);
    assert.strictEqual(updated.priority, 9);
    const { responseBody: twin } = await registry.getTwin(dev('cfg'));
    assert.strictEqual(twin.properties.desired.fw, '1.0');
    const changed = { ...updated, content: { deviceContent: { 'properties.desired.fw': '3.0' } } };
    await expectError(registry.updateConfiguration(changed, true), 'ArgumentError', 400, 'ArgumentInvalid');
  });

  await check('applyConfigurationContentOnDevice: $edgeAgent and $edgeHub desired properties', async () => {
    await registry.create({ deviceId: dev('edge'), capabilities: { iotEdge: true } });
    const content = {
      modulesContent: {
        $edgeAgent: { 'properties.desired': { schemaVersion: '1.1', runtime: { type: 'docker' } } },
        $edgeHub: { 'properties.desired': { schemaVersion: '1.1', routes: { up: 'FROM /* INTO $upstream' } } },
      },
    };
    const { httpResponse } = await registry.applyConfigurationContentOnDevice(dev('edge'), content);
    assert.strictEqual(httpResponse.statusCode, 204);
    const { responseBody: agent } = await registry.getModuleTwin(dev('edge'), '$edgeAgent');
    assert.deepStrictEqual(agent.properties.desired.runtime, { type: 'docker' });
    const { responseBody: edgeHub } = await registry.getModuleTwin(dev('edge'), '$edgeHub');
    assert.strictEqual(edgeHub.properties.desired.routes.up, 'FROM /* INTO $upstream');
    await expectError(registry.applyConfigurationContentOnDevice(dev('cfg'), content), 'ArgumentError', 400);
    await expectError(registry.applyConfigurationContentOnDevice(dev('nobody'), content), 'DeviceNotFoundError', 404);
  });

  await check('removeConfiguration, and of a missing one', async () => {
    await registry.removeConfiguration(cfg('low'));
    await registry.removeConfiguration(cfg('adm'));
    await expectError(registry.getConfiguration(cfg('adm')), 'Error', 404, 'ConfigurationNotFound');
    await expectError(registry.removeConfiguration(cfg('adm')), 'Error', 404, 'ConfigurationNotFound');
  });

  await check('delete, and delete of a missing device', async () => {
    await registry.delete(dev('b'));
    await expectError(registry.get(dev('b')), 'DeviceNotFoundError', 404);
    await expectError(registry.delete(dev('b')), 'DeviceNotFoundError', 404, 'DeviceNotFound');
  });

  await check('a wrong key: UnauthorizedError', async () => {
    const bad = Registry.fromConnectionString(
      cs.replace(/SharedAccessKey=[^;]*/, 'SharedAccessKey=ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA='));
    await expectError(bad.list(), 'UnauthorizedError', 401, 'IotHubUnauthorizedAccess');
  });

  // ---- JobClient (scheduled jobs) and the Registry's import/export jobs, with Azurite as
  // the storage account (IOTHUB_INTEROP_BLOB_IN and _OUT: container SAS URLs;
  // IOTHUB_INTEROP_NO_BLOB=1 leaves the import/export checks out).
  const jobs = JobClient.fromConnectionString(cs);
  const body = (r) => (r && (r.jobStatus || r.responseBody || r.result)) || r;
  async function waitJob(get, jobId) {
    for (let i = 0; i < 300; i++) {
      const job = body(await get(jobId));
      if (['completed', 'failed', 'cancelled'].includes(job.status)) return job;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    throw new Error(`job ${jobId} did not finish`);
  }

  await check('JobClient.scheduleTwinUpdate and getJob until completed', async () => {
    await registry.create({ deviceId: dev('job-twin') });
    const jobId = `node-twin-${run}`;
    const created = body(await jobs.scheduleTwinUpdate(jobId, `deviceId = '${dev('job-twin')}'`,
      { etag: '*', tags: { job: run }, properties: { desired: { fromJob: 1 } } }, new Date(), 60));
    assert.strictEqual(created.status, 'queued');
    const job = await waitJob((id) => jobs.getJob(id), jobId);
    assert.strictEqual(job.status, 'completed', JSON.stringify(job));
    assert.strictEqual(job.deviceJobStatistics.succeededCount, 1);
    const twin = (await registry.getTwin(dev('job-twin'))).responseBody;
    assert.strictEqual(twin.tags.job, run);
    assert.strictEqual(twin.properties.desired.fromJob, 1);
  });

  await check('JobClient.scheduleDeviceMethod on a device online through the control API', async () => {
    await registry.create({ deviceId: dev('job-method') });
    await control('POST', `/devices/${dev('job-method')}/connect`);
    await control('PUT', `/devices/${dev('job-method')}/methods/reboot`, { status: 200, payload: 'done' });
    const jobId = `node-method-${run}`;
    await jobs.scheduleDeviceMethod(jobId, `deviceId = '${dev('job-method')}'`,
      { methodName: 'reboot', payload: {}, responseTimeoutInSeconds: 30 }, new Date(), 60);
    const job = await waitJob((id) => jobs.getJob(id), jobId);
    assert.strictEqual(job.status, 'completed', JSON.stringify(job));
    assert.strictEqual(job.deviceJobStatistics.succeededCount, 1);
  });

  await check('JobClient.cancelJob of a queued job', async () => {
    const jobId = `node-cancel-${run}`;
    await jobs.scheduleTwinUpdate(jobId, "deviceId = 'nobody'", { etag: '*', tags: { never: true } },
      new Date(Date.now() + 3600 * 1000), 60);
    const cancelled = body(await jobs.cancelJob(jobId));
    assert.strictEqual(cancelled.status, 'cancelled');
    assert.strictEqual(body(await jobs.getJob(jobId)).status, 'cancelled');
  });

  await check('JobClient.createQuery over jobs: by type and status, a page at a time', async () => {
    const query = jobs.createQuery('scheduleUpdateTwin', undefined, 1);
    const ids = [];
    for (let page = 0; page < 100; page++) {
      // With a promise, next() takes the token explicitly (without one it starts over).
      const next = await query.next(query.continuationToken);
      const result = next.result || next;
      ids.push(...result.items.map((j) => j.jobId));
      if (!query.hasMoreResults) break;
    }
    assert.ok(ids.includes(`node-twin-${run}`) && ids.includes(`node-cancel-${run}`), ids);
    assert.ok(!ids.includes(`node-method-${run}`), ids);
    const cancelled = await jobs.createQuery(undefined, 'cancelled').next();
    const items = (cancelled.result || cancelled).items.map((j) => j.jobId).filter((id) => id.endsWith(run));
    assert.deepStrictEqual(items, [`node-cancel-${run}`]);
  });

  if (process.env.IOTHUB_INTEROP_NO_BLOB !== '1') {
    const blobIn = process.env.IOTHUB_INTEROP_BLOB_IN;
    const blobOut = process.env.IOTHUB_INTEROP_BLOB_OUT;
    const blobUrl = (container, name) => {
      const [base, sas] = container.split('?');
      return `${base}/${name}?${sas}`;
    };
    const storage = (method, url, data) => new Promise((resolve, reject) => {
      const headers = { 'x-ms-version': '2019-12-12' };
      if (data !== undefined) {
        headers['x-ms-blob-type'] = 'BlockBlob';
        headers['content-length'] = Buffer.byteLength(data);
      }
      const req = http.request(url, { method, headers }, (res) => {
        let text = '';
        res.on('data', (chunk) => { text += chunk; });
        res.on('end', () => (res.statusCode < 300 ? resolve(text)
          : reject(new Error(`${method} blob: ${res.statusCode} ${text}`))));
      });
      req.on('error', reject);
      req.end(data);
    });
    const jobIds = [];

    await check('Registry.exportDevicesToBlob and getJob until completed: devices.txt', async () => {
      await registry.create({ deviceId: dev('exported') });
      const job = body(await registry.exportDevicesToBlob(blobOut, true));
      assert.strictEqual(job.status, 'enqueued');
      jobIds.push(job.jobId);
      const done = await waitJob((id) => registry.getJob(id), job.jobId);
      assert.strictEqual(done.status, 'completed', JSON.stringify(done));
      const lines = (await storage('GET', blobUrl(blobOut, 'devices.txt'))).split('\n').filter((l) => l.trim());
      const mine = lines.map((l) => JSON.parse(l)).filter((d) => d.id === dev('exported'));
      assert.strictEqual(mine.length, 1);
      assert.ok(!mine[0].authentication.symmetricKey.primaryKey, 'keys excluded');
    });

    await check('Registry.importDevicesFromBlob applies devices.txt', async () => {
      await storage('PUT', blobUrl(blobIn, 'devices.txt'),
        JSON.stringify({ id: dev('imported'), importMode: 'createOrUpdate', tags: { from: 'node' } }));
      const job = body(await registry.importDevicesFromBlob(blobIn, blobOut));
      jobIds.push(job.jobId);
      const done = await waitJob((id) => registry.getJob(id), job.jobId);
      assert.strictEqual(done.status, 'completed', JSON.stringify(done));
      const twin = (await registry.getTwin(dev('imported'))).responseBody;
      assert.strictEqual(twin.tags.from, 'node');
    });

    await check('Registry.listJobs', async () => {
      const list = body(await registry.listJobs());
      const ids = list.map((j) => j.jobId);
      for (const id of jobIds) assert.ok(ids.includes(id), `${id} in ${ids}`);
    });

    await check('Registry.cancelJob', async () => {
      const job = body(await registry.exportDevicesToBlob(blobOut, false));
      await registry.cancelJob(job.jobId);
      const done = await waitJob((id) => registry.getJob(id), job.jobId);
      assert.ok(['cancelled', 'completed'].includes(done.status), done.status);
    });
  }

  const failed = results.filter(([, err]) => err).length;
  console.log(`node: ${results.length - failed} passed, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main().catch((err) => {
  console.log(`node: crashed: ${err && err.stack}`);
  process.exitCode = 2;
});
