// Bench peer: Node `ws` 8. Paths: /pub sends each message to every /sub
// connection; any other path echoes. Usage: node ws.js PORT
'use strict';
const { WebSocketServer } = require('ws');
const port = Number(process.argv[2] || 9004);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, maxPayload: 16 * 1024 * 1024 });
const subs = new Set();
wss.on('connection', (ws, req) => {
  ws._socket.setNoDelay(true);
  const path = (req.url || '/').split('?')[0];
  if (path === '/pub') {
    ws.on('message', (data, isBinary) => { for (const s of subs) s.send(data, { binary: isBinary }); });
  } else if (path === '/sub') {
    subs.add(ws);
    ws.on('close', () => subs.delete(ws));
  } else {
    ws.on('message', (data, isBinary) => { ws.send(data, { binary: isBinary }); });
  }
});
wss.on('listening', () => console.error('ws peer on 127.0.0.1:' + port));
