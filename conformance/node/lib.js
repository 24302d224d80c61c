'use strict';
const https = require('https');
// Shared helpers of the Node SDK scripts run by conformance/emulator_node_test.go.

// portAware returns a subclass of an azure-iot HTTP base class whose requests
// go to `port` (the SDKs take a bare host name and cannot carry a port):
// buildRequest gets {port} as its request options when the SDK passes none.
function portAware(HttpBase, port) {
  return class extends HttpBase {
    buildRequest(method, path, headers, host, options, done) {
      if (typeof options === 'function' && done === undefined) {
        return super.buildRequest(method, path, headers, host, { port }, options);
      }
      if (!options) {
        options = { port };
      } else if (typeof options === 'object' && (options.cert || options.key)) {
        // X.509 options and request options cannot be combined: pass the
        // client certificate through a request function instead.
        const x = options;
        options = {
          port,
          request: (o, cb) => https.request(Object.assign(o, { cert: x.cert, key: x.key, passphrase: x.passphrase }), cb),
        };
      } else if (typeof options === 'object' && !options.port) {
        options = Object.assign({ port }, options);
      }
      return super.buildRequest(method, path, headers, host, options, done);
    }
  };
}

// args parses the JSON argument the Go test passes.
function args() {
  if (process.argv.length < 3) {
    throw new Error('usage: node ' + process.argv[1] + ' JSON');
  }
  return JSON.parse(process.argv[2]);
}

// report prints one JSON line and exits 0: the Go test judges the outcome.
function report(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
  process.exit(0);
}

function errorInfo(err) {
  return { name: err && err.constructor ? err.constructor.name : 'Error', message: String(err && err.message), status: err && err.response ? err.response.statusCode : undefined };
}

module.exports = { portAware, args, report, errorInfo };
