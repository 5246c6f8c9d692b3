// The comparison server of the Socket.IO benchmark: Socket.IO 4.8 with the
// Redis adapter (@socket.io/redis-adapter over node-redis), serving the
// same events as ferrocast's Socket.IO endpoint (docs/socketio.md), so that
// one load generator drives both:
//
//   subscribe(topic, ack)        socket.join(topic); ack({ ok: true })
//   unsubscribe(topic, ack)      socket.leave(topic); ack({ ok: true })
//   publish(topic, data, ack)    io.to(topic).emit("message", data, { topic }); ack({ ok: true })
//
//   PORT=3001 REDIS=redis://127.0.0.1:6379 node bench/server.mjs
import { createServer } from "node:http";

import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { Server } from "socket.io";

const port = Number(process.env.PORT ?? 3001);
const redis = process.env.REDIS ?? "redis://127.0.0.1:6379";

const pub = createClient({ url: redis });
const sub = pub.duplicate();
await Promise.all([pub.connect(), sub.connect()]);

const http = createServer();
const io = new Server(http, {
  adapter: createAdapter(pub, sub),
  // The same keep-alive and payload limit as a ferrocast node's defaults.
  pingInterval: 25000,
  pingTimeout: 10000,
  maxHttpBufferSize: 65536,
  cors: { origin: true },
});

io.on("connection", (socket) => {
  socket.on("subscribe", (topic, ack) => {
    socket.join(topic);
    ack?.({ ok: true });
  });
  socket.on("unsubscribe", (topic, ack) => {
    socket.leave(topic);
    ack?.({ ok: true });
  });
  socket.on("publish", (topic, data, ack) => {
    io.to(topic).emit("message", data, { topic });
    ack?.({ ok: true });
  });
});

http.listen(port, "127.0.0.1", () => console.log(`socket.io 4.8 with the Redis adapter on 127.0.0.1:${port}`));
