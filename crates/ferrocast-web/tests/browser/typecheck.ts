// Compiled by `tsc --noEmit` (tsconfig.json here) against the SDK's
// hand-written index.d.ts: the docs' usage must type-check.
import { Client, FerrocastError, createClient, type Message, type StreamPosition } from "ferrocast";

const client = createClient(["wss://a.example.com/ws", "wss://b.example.com/ws"], {
  getToken: async () => "token",
  shared: true,
});
client.on("state", ({ state, previous }) => console.log(previous, "→", state));
client.on("connected", ({ transport }) => console.log("over", transport));
client.on("disconnected", ({ code, reason }) => console.log(code, reason));

const stored = sessionStorage.getItem("pos");
const since: StreamPosition | null = stored ? (JSON.parse(stored) as StreamPosition) : null;
const room = client.subscribe("chat.room1", {
  since,
  message: (m: Message) => {
    console.log(m.topic, m.data, m.position?.offset);
    sessionStorage.setItem("pos", JSON.stringify(room.position));
  },
  gap: ({ reason, message }) => console.warn(reason, message),
  join: (p) => console.log(p.client, p.user),
});
room.on("subscribed", ({ recovered }) => recovered || console.warn("reload"));

async function main(): Promise<void> {
  await room.ready();
  const position: StreamPosition | null = await client.publish("chat.room1", { text: "hi" });
  const page = await room.history({ limit: 10 });
  page.publications.forEach((p) => console.log(p.data));
  const who = await client.presence("chat.room1");
  console.log(position?.offset, who.map((e) => e.client));
  try {
    await client.publish("chat.room1", null);
  } catch (error) {
    if (error instanceof FerrocastError && error.code === "connection_lost") console.log("unknown outcome");
  }
  const node = new Client("ws://127.0.0.1:8080/ws", { WebSocket: class {}, transports: ["websocket"] });
  node.subscribe("news.>").unsubscribe();
  node.disconnect();
}
void main();
