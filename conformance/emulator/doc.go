// Package emulator is a DPS + IoT Hub emulator for tests: the cloud side of
// Warden's provisioning protocols, served over HTTPS on loopback with its
// own test CA, checking what devices send as Azure does
// (spec/protocols.md Part 1, spec/aziot-api.md §8).
//
// Start one in a test:
//
//	em, err := emulator.New(emulator.Options{}) // 127.0.0.1, free port
//	...
//	em.Start(ctx)
//	defer em.Close()
//	en, _ := em.AddSymmetricEnrollment(emulator.SymmetricEnrollment{RegistrationID: "dev-1"})
//	// the device registers at em.URL() with scope em.IDScope(), key en.PrimaryKey,
//	// trusting em.CACertPEM() (or use em.Client()).
//
// DPS (same host and port as the hub):
//
//   - PUT /{scope}/registrations/{regId}/register?api-version=… → 202
//     {operationId, status:"assigning"} with Retry-After (Options.RetryAfter);
//   - GET /{scope}/registrations/{regId}/operations/{opId}?api-version=… →
//     202 {status:"assigning", registrationState:{registrationId,…}} for
//     Options.AssignAfterPolls (or the enrollment's) polls, then 200
//     {status:"assigned", registrationState:{registrationId, assignedHub,
//     deviceId, status, substatus, payload?, tpm?{authenticationKey}}} or
//     {status:"failed", registrationState:{errorCode, errorMessage}}.
//
// Attestation: symmetric-key individual enrollments, group enrollments
// (device key = DeriveDeviceKey(groupKey, regId)), X.509 enrollments (TLS
// client certificate chaining to the enrollment's CA, registration ID =
// CN, no Authorization header) and TPM enrollments (a first PUT without
// Authorization carrying tpm{endorsementKey, storageRootKey} gets 401
// {authenticationKey, keyName:"registration"} made by NewTPMActivation; the
// device then signs its SAS with the imported key). SAS tokens are checked
// as Azure does (VerifySAS): HMAC over sr exactly as sent + "\n" + se, the
// decoded sr compared case-insensitively with the audience, se in the
// future, skn absent or "registration" for DPS and absent for hub keys.
// Bad credentials get 401 with DPS's error body {errorCode:401002,
// trackingId, message, timestampUtc}.
//
// IoT Hub: the module registry of spec/aziot-api.md §8.4 under
// /devices/{d}/modules[/{m}] (list, get, create by PUT without If-Match →
// 200 with a generationId, 409 if it exists; update by PUT with If-Match *
// or the etag → 200, 404 if missing, 412 on an etag mismatch; DELETE with
// If-Match → 204, 404, 412 when If-Match is missing or wrong), authorised
// by the device's SAS (audience {hub}/devices/{d}) or its X.509
// certificate. Module credentials reach GET /devices/{d}/modules/{m}/twin
// (a twin echo) and POST /devices/{d}/modules/{m}/messages/events
// (recorded, see Messages); VerifyModuleSAS checks a module token in Go.
// Errors carry both {"Message":"ErrorCode:<code>;<text>"} (Node SDK) and
// {"message"} (aziot).
//
// Faults (InjectFault): a status (429 with Retry-After, 500, …), a delay
// (a slow or hanging server) or a dropped connection, for one kind of call
// (Op), one registration or device ID, and the next N calls or all.
// What happened: Events, Registrations, Devices, Modules, Messages.
//
// The package also holds the DPS-side TPM activation blob maker
// (NewTPMActivation). cmd/warden-emulator runs the emulator as a program;
// docs/emulator.md describes both.
package emulator
