'use strict';
// DPS registration with an X.509 client certificate through the official
// SDK: azure-iot-provisioning-device-http + azure-iot-security-x509.
// Argument (JSON): {port, scope, registrationId, certFile, keyFile}. Prints
// {ok, result} or {ok: false, error}.
const fs = require('fs');
const { Http } = require('azure-iot-provisioning-device-http');
const HttpBase = require('azure-iot-http-base').Http;
const { X509Security } = require('azure-iot-security-x509');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { portAware, args, report, errorInfo } = require('./lib');

const a = args();
const Base = portAware(HttpBase, a.port);
const security = new X509Security(a.registrationId, {
  cert: fs.readFileSync(a.certFile, 'utf8'),
  key: fs.readFileSync(a.keyFile, 'utf8'),
});
const client = ProvisioningDeviceClient.create(a.host || 'localhost', a.scope, new Http(new Base()), security);
client.register((err, result) => {
  if (err) {
    report({ ok: false, error: errorInfo(err) });
  } else {
    report({ ok: true, result });
  }
});
