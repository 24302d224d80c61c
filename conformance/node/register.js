'use strict';
// DPS registration with the official SDK: azure-iot-provisioning-device-http
// + azure-iot-security-symmetric-key. Argument (JSON): {port, scope,
// registrationId, key} for an individual enrollment, or {..., groupKey} to
// derive the device key as a group enrollment's device does; optional
// payload. Prints {ok, result} or {ok: false, error}.
const crypto = require('crypto');
const { Http } = require('azure-iot-provisioning-device-http');
const HttpBase = require('azure-iot-http-base').Http;
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { portAware, args, report, errorInfo } = require('./lib');

const a = args();
let key = a.key;
if (a.groupKey) {
  key = crypto.createHmac('sha256', Buffer.from(a.groupKey, 'base64')).update(a.registrationId, 'utf8').digest('base64');
}
const Base = portAware(HttpBase, a.port);
const transport = new Http(new Base());
const security = new SymmetricKeySecurityClient(a.registrationId, key);
const client = ProvisioningDeviceClient.create(a.host || 'localhost', a.scope, transport, security);
if (a.payload !== undefined) {
  client.setProvisioningPayload(a.payload);
}
client.register((err, result) => {
  if (err) {
    report({ ok: false, error: errorInfo(err) });
  } else {
    report({ ok: true, result });
  }
});
