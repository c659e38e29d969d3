// Against a running stack: IMAGEGEN_API_URL and IMAGEGEN_API_KEY (pytest's
// tests/integration/test_typescript_client.py starts one and runs `npm test` with both set).
// The stack must let webhooks reach 127.0.0.1 over plain http.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { type IncomingHttpHeaders, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";

import {
  ApiError,
  ImagegenClient,
  JobFailedError,
  WebhookVerificationError,
  verifyWebhook,
} from "../src/index.js";

const configured = Boolean(process.env.IMAGEGEN_API_URL && process.env.IMAGEGEN_API_KEY);
const skip = configured ? false : "set IMAGEGEN_API_URL and IMAGEGEN_API_KEY to a running stack";

interface Delivery {
  headers: IncomingHttpHeaders;
  body: string;
}

/** A webhook receiver on 127.0.0.1: keeps every delivery, answers 204. */
function startReceiver() {
  const deliveries: Delivery[] = [];
  const waiting: Array<() => void> = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      deliveries.push({ headers: request.headers, body: Buffer.concat(chunks).toString("utf8") });
      response.writeHead(204).end();
      waiting.splice(0).forEach((wake) => wake());
    });
  });
  return {
    deliveries,
    server,
    async listen(): Promise<string> {
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    },
    async next(matching: (d: Delivery) => boolean, timeoutMs = 30_000): Promise<Delivery> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = deliveries.find(matching);
        if (found) {
          return found;
        }
        assert.ok(Date.now() < deadline, "no webhook arrived in time");
        await new Promise<void>((resolve) => {
          waiting.push(resolve);
          setTimeout(resolve, 500);
        });
      }
    },
  };
}

const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

describe("a TypeScript backend with only an API key", { skip }, () => {
  const receiver = startReceiver();
  let hooks = "";
  let client: ImagegenClient;

  before(async () => {
    hooks = await receiver.listen();
    client = new ImagegenClient({ timeoutMs: 10_000 });
  });
  after(() => receiver.server.close());

  it("submits, waits, and fetches the image by its URL", async () => {
    const submitted = await client.submit({
      request: { prompt: "a lighthouse from TypeScript", aspect_ratio: "16:9" },
      metadata: { from: "typescript" },
    });
    assert.equal(submitted.status, "queued");
    const job = await client.wait(submitted.job_id, { timeoutMs: 60_000 });
    assert.equal(job.status, "succeeded");
    assert.deepEqual([job.width, job.height], [1344, 768]);
    assert.ok(job.image_url, "a succeeded job links to its image");
    const fetched = await fetch(job.image_url); // a presigned URL: no key
    assert.equal(fetched.status, 200);
    const image = new Uint8Array(await fetched.arrayBuffer());
    assert.equal(sha256(image), job.sha256);
    assert.deepEqual(await client.download(job), image);
  });

  it("verifies the signature of the webhook it received", async () => {
    const job = await client.run(
      { request: { prompt: "a harbour with a webhook" }, webhook_url: `${hooks}/imagegen` },
      { timeoutMs: 60_000 },
    );
    const delivery = await receiver.next((d) => d.body.includes(job.job_id));
    const { secrets } = await client.webhookSecrets();
    const event = verifyWebhook(delivery.body, delivery.headers, secrets);
    assert.equal(event.type, "job.succeeded");
    assert.equal(event.data.job_id, job.job_id);
    assert.equal(delivery.headers["webhook-id"], `msg_${job.job_id}_succeeded`);
    assert.ok(event.data.image_url);
    const image = new Uint8Array(await (await fetch(event.data.image_url)).arrayBuffer());
    assert.equal(sha256(image), job.sha256);
    // A body changed on the way, or another secret, fails.
    assert.throws(
      () => verifyWebhook(delivery.body.replace("succeeded", "failed"), delivery.headers, secrets),
      WebhookVerificationError,
    );
    assert.throws(
      () =>
        verifyWebhook(
          delivery.body,
          delivery.headers,
          "whsec_" + Buffer.from("x".repeat(32)).toString("base64"),
        ),
      WebhookVerificationError,
    );
  });

  it("follows a job's events, and says why a job ended without an image", async () => {
    const submitted = await client.submit({ request: { prompt: "a streamed picture" } });
    const statuses: string[] = [];
    for await (const job of client.stream(submitted.job_id)) {
      statuses.push(job.status);
    }
    assert.equal(statuses.at(-1), "succeeded");
    await assert.rejects(
      client.run({ request: { prompt: "a forbidden picture" } }, { timeoutMs: 60_000 }),
      (error: unknown) => error instanceof JobFailedError && error.job.status === "filtered",
    );
  });

  it("runs batches, and names every bad field", async () => {
    const batch = await client.submitBatch([
      { request: { prompt: "one" } },
      { request: { prompt: "two" } },
    ]);
    const done = await client.waitBatch(batch.batch_id, { timeoutMs: 60_000 });
    assert.deepEqual(done.counts, { succeeded: 2 });
    const listed = [];
    for await (const job of client.listAll({ batch: batch.batch_id, limit: 1 })) {
      listed.push(job.job_id);
    }
    assert.deepEqual(listed.sort(), [...batch.job_ids].sort());
    await assert.rejects(
      client.submit({ request: { prompt: "x", aspect_ratio: "4:3" as "1:1" } }),
      (error: unknown) =>
        error instanceof ApiError &&
        error.status === 422 &&
        error.problem.errors?.some((e) => e.field === "request.aspect_ratio") === true,
    );
  });
});
