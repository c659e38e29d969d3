// The HTTP API with an API key, on `fetch`: submit, follow and download jobs; batches, chains,
// uploads; bounded retries of 429/503 after Retry-After; a timeout on every request.
import {
  ApiError,
  ChainFailedError,
  JobFailedError,
  RequestFailedError,
  StreamEndedError,
  WaitTimeoutError,
} from "./errors.js";
import {
  DEFAULT_RETRY,
  type RetryPolicy,
  retryAfterSeconds,
  retryDelayMs,
  sleep,
} from "./retry.js";
import { readEvents } from "./sse.js";
import {
  type Batch,
  type BatchCreated,
  type Chain,
  type ChainCreated,
  type Job,
  type JobPage,
  type JobSpec,
  type JobStatus,
  type Model,
  type Problem,
  type Upload,
  type WebhookSecrets,
  isFinal,
} from "./types.js";

export interface ClientOptions {
  /** Default: `IMAGEGEN_API_URL`. */
  baseUrl?: string;
  /** Default: `IMAGEGEN_API_KEY`. */
  apiKey?: string;
  /** Longest one request may take (default 30 s; the server's `Prefer: wait` is added). */
  timeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  /** Longest pause between two reads while waiting (default 2 s). */
  maxPollIntervalMs?: number;
  /** Another `fetch` (default: the global one). */
  fetch?: typeof fetch;
}

export interface SubmitOptions {
  /** The same key and body within 24 h return the first job. */
  idempotencyKey?: string;
  /** Answer once the job is final, or after this long (`Prefer: wait`, at most 30 s). */
  waitSeconds?: number;
}

export interface ListOptions {
  status?: JobStatus;
  batch?: string;
  cursor?: string;
  limit?: number;
}

export interface WaitOptions {
  /** Default 5 minutes. */
  timeoutMs?: number;
}

interface Call {
  method: "GET" | "POST";
  path: string;
  query?: Record<string, string | undefined>;
  json?: unknown;
  body?: Uint8Array;
  headers?: Record<string, string>;
  /** Seconds the server may take on purpose (Prefer: wait), added to the timeout. */
  serverWaitSeconds?: number;
  authorized?: boolean;
  stream?: boolean;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_WAIT_MS = 300_000;
const FIRST_POLL_MS = 250;
const MAX_PREFER_WAIT_S = 30;
// The event stream sends a comment every 15 s while nothing changes.
const STREAM_IDLE_MS = 45_000;

export class ImagegenClient {
  readonly baseUrl: string;
  readonly #apiKey: string;
  readonly #timeoutMs: number;
  readonly #retry: RetryPolicy;
  readonly #maxPollMs: number;
  readonly #fetch: typeof fetch;

  constructor(options: ClientOptions = {}) {
    const baseUrl = options.baseUrl ?? process.env.IMAGEGEN_API_URL;
    const apiKey = options.apiKey ?? process.env.IMAGEGEN_API_KEY;
    if (!baseUrl) {
      throw new TypeError("no API URL: pass baseUrl or set IMAGEGEN_API_URL");
    }
    if (!apiKey) {
      throw new TypeError("no API key: pass apiKey or set IMAGEGEN_API_KEY");
    }
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.#apiKey = apiKey;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#retry = { ...DEFAULT_RETRY, ...options.retry };
    this.#maxPollMs = options.maxPollIntervalMs ?? 2_000;
    this.#fetch = options.fetch ?? fetch;
  }

  // -- jobs ---------------------------------------------------------------------------------

  /** Queue one job; `waitSeconds` lets the API answer once it is final (up to 30 s). */
  async submit(job: JobSpec, options: SubmitOptions = {}): Promise<Job> {
    const headers: Record<string, string> = {};
    if (options.idempotencyKey !== undefined) {
      headers["Idempotency-Key"] = options.idempotencyKey;
    }
    const waitSeconds = Math.min(options.waitSeconds ?? 0, MAX_PREFER_WAIT_S);
    if (waitSeconds > 0) {
      headers.Prefer = `wait=${waitSeconds}`;
    }
    return this.#json<Job>({
      method: "POST",
      path: "/v1/jobs",
      json: job,
      headers,
      serverWaitSeconds: waitSeconds,
    });
  }

  /** The job as it is now (a fresh `image_url` once it succeeded). */
  async get(jobId: string): Promise<Job> {
    return this.#json<Job>({ method: "GET", path: `/v1/jobs/${segment(jobId)}` });
  }

  /** One page of jobs, newest first; pass `next_cursor` as `cursor` for the next. */
  async list(options: ListOptions = {}): Promise<JobPage> {
    const query = {
      status: options.status,
      batch: options.batch,
      cursor: options.cursor,
      limit: String(options.limit ?? 50),
    };
    return this.#json<JobPage>({ method: "GET", path: "/v1/jobs", query });
  }

  /** Every job, newest first, a page at a time. */
  async *listAll(options: Omit<ListOptions, "cursor"> = {}): AsyncGenerator<Job> {
    let cursor: string | undefined;
    do {
      const page = await this.list({ ...options, ...(cursor ? { cursor } : {}) });
      yield* page.jobs;
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
  }

  /** Cancel: a waiting job ends `canceled`, a running one stops before its Bedrock call. */
  async cancel(jobId: string): Promise<Job> {
    return this.#json<Job>({ method: "POST", path: `/v1/jobs/${segment(jobId)}/cancel` });
  }

  /** The job once it succeeded; `JobFailedError` (with `.job`) when it ended without an
   * image, `WaitTimeoutError` (with `.lastSeen`) after `timeoutMs`. */
  async wait(jobId: string, options: WaitOptions = {}): Promise<Job> {
    const job = await this.#poll(`job ${jobId}`, options, () => this.get(jobId), isFinal);
    return succeeded(job);
  }

  /** Submit and wait: the succeeded job, or `JobFailedError` / `WaitTimeoutError`. */
  async run(
    job: JobSpec,
    options: WaitOptions & Omit<SubmitOptions, "waitSeconds"> = {},
  ): Promise<Job> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_MS;
    const started = Date.now();
    const submitted = await this.submit(job, {
      ...options,
      waitSeconds: Math.min(timeoutMs / 1000, MAX_PREFER_WAIT_S),
    });
    if (isFinal(submitted)) {
      return succeeded(submitted);
    }
    return this.wait(submitted.job_id, {
      timeoutMs: Math.max(0, timeoutMs - (Date.now() - started)),
    });
  }

  /** The job at once and on every change until it is final (server-sent events). */
  async *stream(jobId: string): AsyncGenerator<Job> {
    const idle = new AbortController();
    let timer = setTimeout(() => idle.abort(), STREAM_IDLE_MS);
    const response = await this.#send(
      { method: "GET", path: `/v1/jobs/${segment(jobId)}/events`, stream: true },
      idle.signal,
    );
    const rearm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => idle.abort(), STREAM_IDLE_MS);
    };
    try {
      if (!response.body) {
        throw new StreamEndedError(`the event stream of job ${jobId} has no body`);
      }
      for await (const event of readEvents(response.body, rearm)) {
        if (event.event === "error") {
          throw new StreamEndedError(`the event stream ended: ${event.data}`);
        }
        if (event.event === "status") {
          const job = JSON.parse(event.data) as Job;
          yield job;
          if (isFinal(job)) {
            return;
          }
        }
      }
      throw new StreamEndedError(`the event stream of job ${jobId} ended before the job did`);
    } finally {
      clearTimeout(timer);
      idle.abort();
    }
  }

  /** The job's image through `GET /v1/jobs/{job_id}/image` (a redirect to a presigned URL,
   * fetched without the key; or the bytes, where the service streams images). */
  async download(job: string | Job): Promise<Uint8Array> {
    return this.#image(`/v1/jobs/${segment(typeof job === "string" ? job : job.job_id)}/image`);
  }

  // -- batches and chains -------------------------------------------------------------------

  async submitBatch(jobs: readonly JobSpec[]): Promise<BatchCreated> {
    return this.#json<BatchCreated>({ method: "POST", path: "/v1/batches", json: jobs });
  }

  async getBatch(batchId: string): Promise<Batch> {
    return this.#json<Batch>({ method: "GET", path: `/v1/batches/${segment(batchId)}` });
  }

  /** The batch once every job is final (`counts` say how they ended). */
  async waitBatch(batchId: string, options: WaitOptions = {}): Promise<Batch> {
    return this.#poll(
      `batch ${batchId}`,
      options,
      () => this.getBatch(batchId),
      (batch) => !batch.counts.queued && !batch.counts.running,
    );
  }

  /** Jobs that each may take an earlier step's image (`{"step": n}`). */
  async submitChain(steps: readonly JobSpec[]): Promise<ChainCreated> {
    return this.#json<ChainCreated>({ method: "POST", path: "/v1/chains", json: { steps } });
  }

  async getChain(chainId: string): Promise<Chain> {
    return this.#json<Chain>({ method: "GET", path: `/v1/chains/${segment(chainId)}` });
  }

  /** The chain once it succeeded; `ChainFailedError` when a step ended without an image. */
  async waitChain(chainId: string, options: WaitOptions = {}): Promise<Chain> {
    const chain = await this.#poll(
      `chain ${chainId}`,
      options,
      () => this.getChain(chainId),
      (c) => c.status === "succeeded" || c.status === "failed",
    );
    if (chain.status !== "succeeded") {
      throw new ChainFailedError(chain);
    }
    return chain;
  }

  /** The chain's final image (its last step's). */
  async downloadChain(chainId: string): Promise<Uint8Array> {
    return this.#image(`/v1/chains/${segment(chainId)}/image`);
  }

  // -- uploads, models, webhook secrets -----------------------------------------------------

  /** Store an input image (PNG, JPEG or WebP); name its `image` (`s3://...`) in a request. */
  async upload(image: Uint8Array, contentType: string = imageType(image)): Promise<Upload> {
    return this.#json<Upload>({
      method: "POST",
      path: "/v1/uploads",
      body: image,
      headers: { "Content-Type": contentType },
    });
  }

  async models(): Promise<Model[]> {
    return (await this.#json<{ models: Model[] }>({ method: "GET", path: "/v1/models" })).models;
  }

  /** The secrets that sign this tenant's webhooks (verify with each of them). */
  async webhookSecrets(): Promise<WebhookSecrets> {
    return this.#json<WebhookSecrets>({ method: "GET", path: "/v1/webhook-secrets" });
  }

  // -- the wire -----------------------------------------------------------------------------

  async #poll<T>(
    what: string,
    options: WaitOptions,
    read: () => Promise<T>,
    done: (found: T) => boolean,
  ): Promise<T> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_MS;
    const deadline = Date.now() + timeoutMs;
    let delay = Math.min(FIRST_POLL_MS, this.#maxPollMs);
    for (;;) {
      const found = await read();
      if (done(found)) {
        return found;
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new WaitTimeoutError(what, timeoutMs, found as Job | Batch | Chain);
      }
      await sleep(Math.min(delay, remaining));
      delay = Math.min(delay * 2, this.#maxPollMs);
    }
  }

  async #image(path: string): Promise<Uint8Array> {
    let response = await this.#send({ method: "GET", path });
    const location =
      response.status >= 300 && response.status < 400 ? response.headers.get("location") : null;
    if (location) {
      // A presigned URL: fetched without the key (S3 refuses a request that has both).
      await response.body?.cancel();
      response = await this.#send({
        method: "GET",
        path: new URL(location, this.baseUrl).href,
        authorized: false,
      });
    }
    return new Uint8Array(await response.arrayBuffer());
  }

  async #json<T>(call: Call): Promise<T> {
    return (await (await this.#send(call)).json()) as T;
  }

  /** Send `call`, again after a 429 or 503 as the retry policy allows; throws `ApiError`. */
  async #send(call: Call, signal?: AbortSignal): Promise<Response> {
    const url = new URL(call.path, `${this.baseUrl}/`);
    for (const [name, value] of Object.entries(call.query ?? {})) {
      if (value !== undefined) {
        url.searchParams.set(name, value);
      }
    }
    const headers: Record<string, string> = { ...call.headers };
    if (call.authorized !== false) {
      headers.Authorization = `Bearer ${this.#apiKey}`;
    }
    let body: Uint8Array | string | undefined = call.body;
    if (call.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(call.json);
    }
    for (let retry = 0; ; retry++) {
      const timeout = call.stream
        ? undefined
        : AbortSignal.timeout(this.#timeoutMs + (call.serverWaitSeconds ?? 0) * 1000);
      const signals = [timeout, signal].filter((s): s is AbortSignal => s !== undefined);
      let response: Response;
      try {
        response = await this.#fetch(url, {
          method: call.method,
          headers,
          ...(body !== undefined ? { body } : {}),
          redirect: "manual",
          ...(signals.length ? { signal: AbortSignal.any(signals) } : {}),
        });
      } catch (error) {
        throw new RequestFailedError(`${call.method} ${url.pathname}: ${String(error)}`, {
          cause: error,
        });
      }
      if (response.status < 400) {
        return response;
      }
      const failure = await apiError(response);
      const delay = retryDelayMs(this.#retry, response.status, failure.retryAfterSeconds, retry);
      if (delay === undefined) {
        throw failure;
      }
      await sleep(delay);
    }
  }
}

async function apiError(response: Response): Promise<ApiError> {
  const text = await response.text();
  let problem: Problem;
  try {
    problem = JSON.parse(text) as Problem;
    if (typeof problem.title !== "string") {
      throw new TypeError("not a problem");
    }
  } catch {
    problem = {
      type: "about:blank",
      title: response.statusText || "Error",
      status: response.status,
      detail: text.slice(0, 500),
      errors: [],
    };
  }
  problem.status = response.status;
  return new ApiError(problem, retryAfterSeconds(response.headers.get("retry-after")));
}

function succeeded(job: Job): Job {
  if (job.status !== "succeeded") {
    throw new JobFailedError(job);
  }
  return job;
}

function segment(value: string): string {
  return encodeURIComponent(value);
}

function imageType(data: Uint8Array): string {
  const starts = (...bytes: number[]) => bytes.every((b, i) => data[i] === b);
  if (starts(0x89, 0x50, 0x4e, 0x47)) {
    return "image/png";
  }
  if (starts(0xff, 0xd8, 0xff)) {
    return "image/jpeg";
  }
  if (starts(0x52, 0x49, 0x46, 0x46) && String.fromCharCode(...data.slice(8, 12)) === "WEBP") {
    return "image/webp";
  }
  throw new TypeError("not a PNG, JPEG or WebP image: pass its content type");
}
