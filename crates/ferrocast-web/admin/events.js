// Server-Sent Events read from a fetch() body: what EventSource does, for
// a request that carries an Authorization header.

/**
 * Splits `text` into complete events; returns them and the incomplete rest.
 * @param {string} text
 * @returns {{ events: { name: string, data: string }[], rest: string }}
 */
export function splitEvents(text) {
  const events = [];
  const blocks = text.replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop() ?? "";
  for (const block of blocks) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) events.push({ name, data: data.join("\n") });
  }
  return { events, rest };
}

/**
 * Reads `body` until it ends or `signal` aborts, calling `onEvent` with each
 * event's name and its data parsed as JSON.
 * @param {ReadableStream<Uint8Array>} body
 * @param {AbortSignal} signal
 * @param {(name: string, data: any) => void} onEvent
 */
export async function readEvents(body, signal, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      const { events, rest } = splitEvents(buffer);
      buffer = rest;
      for (const event of events) {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          data = event.data;
        }
        onEvent(event.name, data);
      }
    }
  } catch (error) {
    if (!signal.aborted) throw error;
  }
}
