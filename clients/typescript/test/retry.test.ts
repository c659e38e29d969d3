// Retries against a fake server: a 429 or 503 is sent again after its Retry-After, within bounds.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";

import { ApiError, ImagegenClient } from "../src/index.js";
import { retryAfterSeconds } from "../src/retry.js";
import { readEvents } from "../src/sse.js";

const JOB = {
  job_id: "j1",
  status: "queued",
  model_id: "stability.stable-image-core-v1:0",
  priority: "interactive",
  request: { prompt: "x" },
  created_at: "2026-11-25T10:00:00Z",
  url: "/v1/jobs/j1",
};

interface Answer {
  status: number;
  headers?: Record<string, string>;
  body: unknown;
}

/** Answers each request with the next answer; keeps when each came. */
async function fakeServer(answers: Answer[]) {
  const seen: number[] = [];
  const server = createServer((_request, response) => {
    seen.push(Date.now());
    const answer = answers.shift() ?? { status: 500, body: {} };
    response.writeHead(answer.status, { "Content-Type": "application/json", ...answer.headers });
    response.end(JSON.stringify(answer.body));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { seen, url, close: () => server.close() };
}

const busy = (status: number, retryAfter?: string): Answer => ({
  status,
  ...(retryAfter ? { headers: { "Retry-After": retryAfter } } : {}),
  body: { type: "about:blank", title: "Busy", status, detail: "wait", errors: [] },
});

describe("retries", () => {
  for (const status of [429, 503]) {
    it(`sends a ${status} again after its Retry-After`, async () => {
      const server = await fakeServer([busy(status, "1"), { status: 200, body: JOB }]);
      try {
        const job = await new ImagegenClient({ baseUrl: server.url, apiKey: "k" }).get("j1");
        assert.equal(job.job_id, "j1");
        const [first = 0, second = 0] = server.seen;
        assert.ok(second - first >= 1000 && second - first < 2000, `${second - first} ms`);
      } finally {
        server.close();
      }
    });
  }

  it("does not wait longer than it may, nor retry other errors", async () => {
    const server = await fakeServer([busy(429, "3600"), busy(500, "1")]);
    try {
      const client = new ImagegenClient({ baseUrl: server.url, apiKey: "k" });
      await assert.rejects(
        client.get("j1"),
        (e: unknown) => e instanceof ApiError && e.retryAfterSeconds === 3600,
      );
      await assert.rejects(
        client.get("j1"),
        (e: unknown) => e instanceof ApiError && e.status === 500,
      );
      assert.equal(server.seen.length, 2);
    } finally {
      server.close();
    }
  });

  it("reads Retry-After as seconds or an HTTP date", () => {
    const now = Date.parse("2026-11-25T10:00:00Z");
    assert.equal(retryAfterSeconds("7"), 7);
    assert.equal(retryAfterSeconds("Wed, 25 Nov 2026 10:00:30 GMT", now), 30);
    assert.equal(retryAfterSeconds("soon"), undefined);
  });
});

describe("server-sent events", () => {
  it("reads events split anywhere, skipping comments", async () => {
    const text =
      ': still waiting\n\nevent: status\ndata: {"a":\ndata: 1}\n\r\nevent: error\ndata: revoked\n\n';
    const chunks = [text.slice(0, 7), text.slice(7, 30), text.slice(30)].map((c) =>
      new TextEncoder().encode(c),
    );
    async function* body() {
      yield* chunks;
    }
    const events = [];
    for await (const event of readEvents(body())) {
      events.push(event);
    }
    assert.deepEqual(events, [
      { event: "status", data: '{"a":\n1}' },
      { event: "error", data: "revoked" },
    ]);
  });
});
