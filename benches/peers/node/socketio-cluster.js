// Bench peer for benches/cluster.sh: one Socket.IO 4 node with
// @socket.io/redis-adapter, so that several such nodes on one Redis act as
// one server. A client connecting with `?role=pub` is the publisher: each
// "pub" event it emits goes to the room "bench" on every node; every other
// client joins "bench" on connect. WebSocket transport only, no
// compression, as tether and the other peers run.
// Usage: node socketio-cluster.js PORT REDIS_PORT
'use strict';
const http = require('http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');

const port = Number(process.argv[2] || 9005);
const redisPort = Number(process.argv[3] || 6379);

async function main() {
  const pubClient = createClient({ socket: { host: '127.0.0.1', port: redisPort } });
  const subClient = pubClient.duplicate();
  for (const c of [pubClient, subClient]) c.on('error', (e) => console.error('redis:', e.message));
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const httpServer = http.createServer();
  httpServer.on('connection', (sock) => sock.setNoDelay(true));
  const io = new Server(httpServer, {
    transports: ['websocket'],
    perMessageDeflate: false,
    serveClient: false,
    maxHttpBufferSize: 1e6,
    adapter: createAdapter(pubClient, subClient),
  });
  io.on('connection', (socket) => {
    if (socket.handshake.query.role === 'pub') {
      socket.on('pub', (data) => io.to('bench').emit('b', data));
    } else {
      socket.join('bench');
    }
  });
  httpServer.listen(port, '127.0.0.1', () =>
    console.error(`socket.io node on 127.0.0.1:${port}, redis 127.0.0.1:${redisPort}`));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
