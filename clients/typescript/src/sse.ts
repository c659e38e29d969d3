// Server-sent events (the WHATWG format), read from a response body.

export interface ServerSentEvent {
  event: string;
  data: string;
}

/** Each event of `body`, in order; comments (the API's keep-alives) are skipped. */
export async function* readEvents(
  body: AsyncIterable<Uint8Array>,
  onChunk: () => void = () => {},
): AsyncGenerator<ServerSentEvent> {
  const decoder = new TextDecoder();
  let buffered = "";
  let event = "";
  let data: string[] = [];
  for await (const chunk of body) {
    onChunk();
    buffered += decoder.decode(chunk, { stream: true });
    const lines = buffered.split(/\r\n|\r|\n/);
    buffered = lines.pop() ?? "";
    for (const line of lines) {
      if (line === "") {
        if (data.length > 0 || event) {
          yield { event: event || "message", data: data.join("\n") };
        }
        event = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) {
        continue;
      }
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) {
        value = value.slice(1);
      }
      if (field === "event") {
        event = value;
      } else if (field === "data") {
        data.push(value);
      }
    }
  }
}
