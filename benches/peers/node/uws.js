// Bench peer: uWebSockets (npm `uwebsockets`, native build). Paths: /pub
// publishes each message to topic "b" (every /sub connection subscribes to
// it on open); any other path echoes.
// Usage: node uws.js PORT [KEY CERT] [--shared-compressor]
// (with KEY and CERT, PEM files: wss through uWS.SSLApp, uWebSockets' own TLS;
// with --shared-compressor, permessage-deflate through uWS.SHARED_COMPRESSOR,
// and every echo and publish asks for compression).
'use strict';
const uWS = require('uwebsockets');
const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const compress = process.argv.includes('--shared-compressor');
const port = Number(args[0] || 9003);
const opts = {
  compression: compress ? uWS.SHARED_COMPRESSOR : uWS.DISABLED,
  maxPayloadLength: 16 * 1024 * 1024, idleTimeout: 0, maxBackpressure: 64 * 1024 * 1024,
};
const [keyFile, certFile] = args.slice(1);
const app = keyFile && certFile
  ? uWS.SSLApp({ key_file_name: keyFile, cert_file_name: certFile })
  : uWS.App();
app.ws('/pub', { ...opts, message: (ws, msg, isBinary) => { app.publish('b', msg, isBinary, compress); } });
app.ws('/sub', { ...opts, open: (ws) => { ws.subscribe('b'); } });
app.ws('/*', { ...opts, message: (ws, msg, isBinary) => { ws.send(msg, isBinary, compress); } });
app.listen('127.0.0.1', port, (token) => {
  if (!token) { console.error('uws peer: cannot listen on ' + port); process.exit(1); }
  console.error('uWebSockets peer on ' + (keyFile ? 'wss' : 'ws') + '://127.0.0.1:' + port +
    (compress ? ' (SHARED_COMPRESSOR)' : ''));
});
