#!/usr/bin/env node
// The reference server that shows the load generator is not the bottleneck:
// a bare Node `ws` server that broadcasts one message to every client at a
// fixed rate. Same wire shape as perpstream's price stream (`connected` with
// seq 1, then the message with a per-connection seq and a fresh `ts`), and
// the same body, so the clients do the same work per message.
//
// argv[2] is a JSON object: port, hz, body (a JSON object's text after its
// opening brace, without seq: what perpstream's Frame holds; its "ts" is
// replaced at each broadcast).
'use strict';

const WebSocket = require('ws');

const cfg = JSON.parse(process.argv[2]);
const template = JSON.parse('{' + cfg.body);

const server = new WebSocket.Server({ host: '127.0.0.1', port: cfg.port, backlog: 4096 });
const seqs = new Map();

server.on('connection', (ws) => {
  seqs.set(ws, 1);
  const connected = { type: 'connected', channel: template.channel, ts: Date.now() };
  ws.send(JSON.stringify({ seq: 1, ...connected }));
  ws.on('close', () => seqs.delete(ws));
  ws.on('error', () => seqs.delete(ws));
});

server.on('listening', () => {
  process.stdout.write(JSON.stringify({ event: 'listening', port: server.address().port }) + '\n');
});

setInterval(() => {
  template.ts = Date.now();
  const body = JSON.stringify(template).slice(1); // encoded once, as perpstream does
  for (const [ws, seq] of seqs) {
    const next = seq + 1;
    seqs.set(ws, next);
    ws.send('{"seq":' + next + ',' + body);
  }
}, 1000 / cfg.hz);

const stop = () => {
  server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
