// Bench peer: uWebSockets (npm `uwebsockets`, native build). Paths: /pub
// publishes each message to topic "b" (every /sub connection subscribes to
// it on open); any other path echoes. Usage: node uws.js PORT [KEY CERT]
// (with KEY and CERT, PEM files: wss through uWS.SSLApp, uWebSockets' own TLS).
'use strict';
const uWS = require('uwebsockets');
const port = Number(process.argv[2] || 9003);
const opts = { compression: 0, maxPayloadLength: 16 * 1024 * 1024, idleTimeout: 0, maxBackpressure: 64 * 1024 * 1024 };
const [keyFile, certFile] = process.argv.slice(3);
const app = keyFile && certFile
  ? uWS.SSLApp({ key_file_name: keyFile, cert_file_name: certFile })
  : uWS.App();
app.ws('/pub', { ...opts, message: (ws, msg, isBinary) => { app.publish('b', msg, isBinary); } });
app.ws('/sub', { ...opts, open: (ws) => { ws.subscribe('b'); } });
app.ws('/*', { ...opts, message: (ws, msg, isBinary) => { ws.send(msg, isBinary); } });
app.listen('127.0.0.1', port, (token) => {
  if (!token) { console.error('uws peer: cannot listen on ' + port); process.exit(1); }
  console.error('uWebSockets peer on ' + (keyFile ? 'wss' : 'ws') + '://127.0.0.1:' + port);
});
