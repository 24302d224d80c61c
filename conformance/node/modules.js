'use strict';
// Module identity CRUD with the official service SDK's Registry
// (azure-iothub) authenticated by a device-scoped SAS, as
// spec/protocols.md §2.6 found workable. Argument (JSON): {port, host,
// deviceId, deviceKey, moduleId}. Prints {ok, steps} or {ok: false, step,
// error}.
const { Registry } = require('azure-iothub');
const { RestApiClient } = require('azure-iothub/dist/common-http/rest_api_client');
const HttpBase = require('azure-iothub/dist/common-http/http').Http;
const { SharedAccessSignature } = require('azure-iot-common');
const { portAware, args, report, errorInfo } = require('./lib');

const a = args();
const host = a.host || 'localhost';
const expiry = Math.floor(Date.now() / 1000) + 3600;
// As the device SDK: the resource URI-encoded, no skn for a device key.
const sas = SharedAccessSignature.create(encodeURIComponent(host + '/devices/' + a.deviceId), '', a.deviceKey, expiry).toString();
const config = { host, sharedAccessSignature: sas };
const Base = portAware(HttpBase, a.port);
const registry = new Registry(config, new RestApiClient(config, 'warden-conformance', new Base()));

async function main() {
  const steps = {};
  let step = 'addModule';
  try {
    steps.addModule = (await registry.addModule({ deviceId: a.deviceId, moduleId: a.moduleId })).responseBody;
    step = 'getModule';
    steps.getModule = (await registry.getModule(a.deviceId, a.moduleId)).responseBody;
    step = 'getModulesOnDevice';
    steps.getModulesOnDevice = (await registry.getModulesOnDevice(a.deviceId)).responseBody;
    step = 'updateModule';
    steps.updateModule = (await registry.updateModule({
      deviceId: a.deviceId, moduleId: a.moduleId,
      authentication: { type: 'sas', symmetricKey: { primaryKey: a.newPrimaryKey, secondaryKey: a.newSecondaryKey } },
    }, true)).responseBody;
    step = 'removeModule';
    await registry.removeModule(a.deviceId, a.moduleId);
    steps.removeModule = true;
    step = 'getModule after remove';
    try {
      await registry.getModule(a.deviceId, a.moduleId);
      steps.getAfterRemove = 'found';
    } catch (err) {
      steps.getAfterRemove = errorInfo(err);
    }
    report({ ok: true, steps });
  } catch (err) {
    report({ ok: false, step, steps, error: errorInfo(err) });
  }
}
main();
